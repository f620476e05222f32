// The first thing every call meets, on every service (health and reflection
// included), before any handler or validation:
//  1. authentication and role (when the server has --auth-tokens): a missing
//     or unknown bearer token is UNAUTHENTICATED, a role too weak for the
//     method PERMISSION_DENIED;
//  2. metadata that looks like a plaintext credential is refused;
//  3. the handler sees the caller's name in `modelcache-caller` (for the audit
//     log) and never the authorization header itself.
import { type Metadata, type ServerInterceptingCallInterface, type ServerInterceptor, status } from "@grpc/grpc-js";
import type { AccessTokens, Caller } from "../auth/access-tokens.js";
import { allows, requiredRole } from "../auth/method-roles.js";
import { quote } from "../errors.js";
import { interceptCall } from "./intercept-call.js";
import { methodOf } from "./method-path.js";
import { firstCredentialKey } from "./reject-plaintext-credentials.js";

const CALLER_KEY = "modelcache-caller";

/** The caller's name as the guard recorded it, for logs. */
export function callerOf(metadata: Metadata): string | undefined {
  const value = metadata.get(CALLER_KEY)[0];
  return typeof value === "string" ? value : undefined;
}

/** Told of every call the guard refuses (the audit log). */
export type RefusalRecorder = (refusal: { caller: string; method: string; result: string }) => void;

export function guardCalls(tokens: AccessTokens | undefined, onRefused?: RefusalRecorder): ServerInterceptor {
  return (method, call) =>
    interceptCall(call, {
      onMetadata(metadata) {
        let verdict: Verdict;
        try {
          verdict = judge(tokens, method.path, metadata, call);
        } catch {
          // never let one call's odd metadata or certificate take the server down
          verdict = { code: status.INTERNAL, details: "the server could not read this call's metadata", caller: `peer ${call.getPeer()}` };
        }
        if ("metadata" in verdict) return verdict.metadata;
        onRefused?.({ caller: verdict.caller, method: methodOf(method.path), result: status[verdict.code] });
        return { code: verdict.code, details: verdict.details };
      },
    });
}

type Verdict = { metadata: Metadata } | { code: status; details: string; caller: string };

/** Lets a call through (with the metadata its handler sees) or says why not. */
function judge(tokens: AccessTokens | undefined, path: string, metadata: Metadata, call: ServerInterceptingCallInterface): Verdict {
  const required = requiredRole(path);
  let caller: Caller | undefined;
  if (tokens && required !== "none") {
    const bearer = bearerOf(metadata);
    caller = bearer === undefined ? undefined : tokens.identify(bearer);
    if (!caller) {
      return {
        code: status.UNAUTHENTICATED,
        details: `${bearer === undefined ? "no bearer token" : "unknown bearer token"}: this server requires 'authorization: Bearer <token>' metadata (modelcache CLI: --token or MODELCACHE_TOKEN)`,
        caller: `peer ${call.getPeer()}`,
      };
    }
    if (!allows(caller.role, required)) {
      return {
        code: status.PERMISSION_DENIED,
        details: `token ${quote(caller.name)} has the role '${caller.role}'; ${methodOf(path)} needs '${required}'${required === "admin" ? "" : " or above"}: ask for a token with ${required === "admin" ? "that role" : `the role '${required}' or 'admin'`}`,
        caller: caller.name,
      };
    }
  }
  const name = caller?.name ?? certificateSubject(call.getAuthContext().sslPeerCertificate?.subject);
  const key = firstCredentialKey(metadata);
  if (key !== undefined) {
    return {
      code: status.INVALID_ARGUMENT,
      details: `metadata key ${quote(key)} looks like a plaintext credential, which modelcache never accepts: store the secret with PutSecret and refer to it by credential_alias`,
      caller: name ?? `peer ${call.getPeer()}`,
    };
  }
  metadata.remove("authorization");
  metadata.remove(CALLER_KEY);
  // metadata values are printable ASCII: a certificate subject may not be
  if (name !== undefined) metadata.set(CALLER_KEY, printable(name));
  return { metadata };
}

/** `value` with every character outside printable ASCII written as \\u{...}. */
function printable(value: string): string {
  return value.replace(/[^\x20-\x7e]/gu, (c) => `\\u{${c.codePointAt(0)!.toString(16)}}`).slice(0, 256);
}

function bearerOf(metadata: Metadata): string | undefined {
  const value = metadata.get("authorization")[0];
  if (typeof value !== "string") return undefined;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(value);
  return match?.[1];
}

/** "CN=ci,O=acme" from a peer certificate's subject, or undefined without one. */
function certificateSubject(subject: Partial<Record<string, string | string[]>> | undefined): string | undefined {
  if (!subject || Object.keys(subject).length === 0) return undefined;
  return Object.entries(subject)
    .filter((entry): entry is [string, string | string[]] => entry[1] !== undefined)
    .map(([k, v]) => `${k}=${Array.isArray(v) ? v.join("+") : v}`)
    .join(",");
}
