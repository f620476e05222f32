// Credentials reach modelcache only through the vault (PutSecret, then a
// credential_alias). Metadata that carries something that looks like a
// credential is refused by the call guard (guard-calls.ts), on every RPC.
import type { Metadata } from "@grpc/grpc-js";

const CREDENTIAL_WORDS = new Set(["token", "password", "secret", "apikey"]);

/** Whether a metadata key names a credential: a `-`/`_` part is token, password, secret or apikey, or `api` is followed by `key`. */
export function isCredentialKey(key: string): boolean {
  const parts = key.toLowerCase().split(/[-_]/);
  return parts.some((part, i) => CREDENTIAL_WORDS.has(part) || (part === "api" && parts[i + 1] === "key"));
}

export function firstCredentialKey(metadata: Metadata): string | undefined {
  return Object.keys(metadata.getMap()).find(isCredentialKey);
}
