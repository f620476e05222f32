// Credentials reach modelcache only through the vault (PutSecret, then a
// credential_alias). A call whose metadata carries something that looks
// like a credential is refused before anything else happens, on every RPC.
import { type Metadata, ResponderBuilder, ServerInterceptingCall, type ServerInterceptor, ServerListenerBuilder, status } from "@grpc/grpc-js";

const CREDENTIAL_WORDS = new Set(["token", "password", "secret", "apikey"]);

/** Whether a metadata key names a credential: a `-`/`_` part is token, password, secret or apikey, or `api` is followed by `key`. */
export function isCredentialKey(key: string): boolean {
  const parts = key.toLowerCase().split(/[-_]/);
  return parts.some((part, i) => CREDENTIAL_WORDS.has(part) || (part === "api" && parts[i + 1] === "key"));
}

export function firstCredentialKey(metadata: Metadata): string | undefined {
  return Object.keys(metadata.getMap()).find(isCredentialKey);
}

export const rejectPlaintextCredentials: ServerInterceptor = (_method, call) =>
  new ServerInterceptingCall(
    call,
    new ResponderBuilder()
      .withStart((next) => {
        next(
          new ServerListenerBuilder()
            .withOnReceiveMetadata((metadata, pass) => {
              const key = firstCredentialKey(metadata);
              if (key === undefined) return pass(metadata);
              call.sendStatus({
                code: status.INVALID_ARGUMENT,
                details: `metadata key '${key.slice(0, 80)}' looks like a plaintext credential, which modelcache never accepts: store the secret with PutSecret and refer to it by credential_alias`,
              });
            })
            .build(),
        );
      })
      .build(),
  );
