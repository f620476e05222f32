// The credential vault's operations: secrets by alias, sealed at rest
// (vault.ts). Nothing here is ever returned over the wire; only the pull
// reads a secret, to authenticate to a source.
import { ModelCacheError } from "../errors.js";
import { checkName } from "./names.js";
import type { Registry } from "./open-registry.js";

const MAX_SECRET_BYTES = 64 * 1024;

export async function putSecret(registry: Registry, alias: string, value: string): Promise<void> {
  checkName("alias", alias);
  if (value === "") {
    throw new ModelCacheError("invalid_argument", "value is required: give the secret to store under this alias");
  }
  if (Buffer.byteLength(value) > MAX_SECRET_BYTES) {
    throw new ModelCacheError("invalid_argument", `value is larger than ${MAX_SECRET_BYTES} bytes; a credential should be much smaller`);
  }
  await registry.vault.put(alias, value);
}

/** true when a secret was removed, false when the alias had none */
export async function deleteSecret(registry: Registry, alias: string): Promise<boolean> {
  checkName("alias", alias);
  return registry.records.run(`secret:${alias}`, undefined, async () => {
    if (!(await registry.vault.has(alias))) return false;
    await registry.vault.del(alias);
    return true;
  });
}

export async function readSecret(registry: Registry, alias: string): Promise<string | undefined> {
  return registry.vault.get(alias);
}
