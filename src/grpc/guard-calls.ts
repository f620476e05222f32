// The first thing every call meets, on every service (health and reflection
// included), before any handler or validation:
//  1. authentication and role (when the server has --auth-tokens): a missing
//     or unknown bearer token is UNAUTHENTICATED, a role too weak for the
//     method PERMISSION_DENIED;
//  2. metadata that looks like a plaintext credential is refused;
//  3. the handler sees the caller's name in `modelcache-caller` (for the audit
//     log) and never the authorization header itself.
import { Metadata, ResponderBuilder, ServerInterceptingCall, type ServerInterceptor, ServerListenerBuilder, status } from "@grpc/grpc-js";
import type { AccessTokens, Caller } from "../auth/access-tokens.js";
import { allows, requiredRole } from "../auth/method-roles.js";
import { quote } from "../errors.js";
import { firstCredentialKey } from "./reject-plaintext-credentials.js";

export const CALLER_KEY = "modelcache-caller";

/** The caller's name as the guard recorded it, for logs. */
export function callerOf(metadata: Metadata): string | undefined {
  const value = metadata.get(CALLER_KEY)[0];
  return typeof value === "string" ? value : undefined;
}

/** Told of every call the guard refuses for want of a token or a role (the audit log). */
export type RefusalRecorder = (refusal: { caller: string; method: string; result: string }) => void;

export function guardCalls(tokens: AccessTokens | undefined, onRefused?: RefusalRecorder): ServerInterceptor {
  return (method, call) =>
    new ServerInterceptingCall(
      call,
      new ResponderBuilder()
        .withStart((next) => {
          next(
            new ServerListenerBuilder()
              .withOnReceiveMetadata((metadata, pass) => {
                const refused = (code: status, details: string) => call.sendStatus({ code, details, metadata: new Metadata() });
                const required = requiredRole(method.path);
                let caller: Caller | undefined;
                if (tokens && required !== "none") {
                  const bearer = bearerOf(metadata);
                  caller = bearer === undefined ? undefined : tokens.identify(bearer);
                  if (!caller) {
                    onRefused?.({ caller: `peer ${call.getPeer()}`, method: methodName(method.path), result: "UNAUTHENTICATED" });
                    return refused(
                      status.UNAUTHENTICATED,
                      `${bearer === undefined ? "no bearer token" : "unknown bearer token"}: this server requires 'authorization: Bearer <token>' metadata (modelcache CLI: --token or MODELCACHE_TOKEN)`,
                    );
                  }
                  if (!allows(caller.role, required)) {
                    onRefused?.({ caller: caller.name, method: methodName(method.path), result: "PERMISSION_DENIED" });
                    return refused(status.PERMISSION_DENIED, `token ${quote(caller.name)} has the role '${caller.role}'; ${methodName(method.path)} needs '${required}': ask for an admin token`);
                  }
                }
                const key = firstCredentialKey(metadata);
                if (key !== undefined) {
                  return refused(
                    status.INVALID_ARGUMENT,
                    `metadata key ${quote(key)} looks like a plaintext credential, which modelcache never accepts: store the secret with PutSecret and refer to it by credential_alias`,
                  );
                }
                metadata.remove("authorization");
                metadata.remove(CALLER_KEY);
                const name = caller?.name ?? certificateSubject(call.getAuthContext().sslPeerCertificate?.subject);
                if (name !== undefined) metadata.set(CALLER_KEY, name);
                pass(metadata);
              })
              .build(),
          );
        })
        .build(),
    );
}

/** "GetModel" from "/modelcache.v1.ModelCacheService/GetModel". */
function methodName(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
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
