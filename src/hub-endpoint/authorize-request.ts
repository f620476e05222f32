// Who may use the hub endpoint: with --auth-tokens, a bearer token of a
// consumer or an admin (what ResolveModel needs); no or an unknown token is
// 401, a reader's 403. Without tokens, anyone who can reach the address.
import type { AccessTokens } from "../auth/access-tokens.js";
import { allows } from "../auth/method-roles.js";
import { ModelCacheError, quote } from "../errors.js";

/** The caller's name for the audit log: the token's name, else `fallback` (the peer). */
export function authorizeRequest(tokens: AccessTokens | undefined, authorization: string | undefined, fallback: string): string {
  if (!tokens) return fallback;
  const bearer = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? "")?.[1];
  const caller = bearer === undefined ? undefined : tokens.identify(bearer);
  if (!caller) {
    throw new ModelCacheError("unauthenticated", `${bearer === undefined ? "no bearer token" : "unknown bearer token"}: this endpoint requires 'Authorization: Bearer <token>' of a consumer or admin (huggingface_hub: HF_TOKEN)`);
  }
  if (!allows(caller.role, "consumer")) {
    throw new ModelCacheError("permission_denied", `token ${quote(caller.name)} has the role '${caller.role}'; the hub endpoint needs 'consumer' or above: ask for a token with the role 'consumer' or 'admin'`);
  }
  return caller.name;
}
