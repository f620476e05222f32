// The vault's key: 32 random bytes in a file only the server's user may read
// (--vault-key-file, default <data-dir>/vault.key). Created with mode 0600 on
// first start; a key file that its group or others may read is refused.
import { randomBytes } from "node:crypto";
import { readFile, stat } from "node:fs/promises";
import { writeFileDurably } from "../cache/durable.js";
import { ModelCacheError, quote } from "../errors.js";

export const VAULT_KEY_BYTES = 32;

export async function loadVaultKey(file: string): Promise<Buffer> {
  const info = await stat(file).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT") return undefined;
    throw new ModelCacheError("failed_precondition", `cannot read --vault-key-file ${quote(file)}: ${err.code ?? err.message}`);
  });
  if (!info) {
    const key = randomBytes(VAULT_KEY_BYTES);
    await writeFileDurably(file, key, 0o600);
    return key;
  }
  if (!info.isFile()) throw new ModelCacheError("failed_precondition", `--vault-key-file ${quote(file)} is not a regular file`);
  if ((info.mode & 0o077) !== 0) {
    throw new ModelCacheError(
      "failed_precondition",
      `--vault-key-file ${quote(file)} may be read by its group or others (mode ${(info.mode & 0o777).toString(8)}): run 'chmod 600 ${file}' and start again`,
    );
  }
  const key = await readFile(file);
  if (key.length !== VAULT_KEY_BYTES) {
    throw new ModelCacheError("failed_precondition", `--vault-key-file ${quote(file)} holds ${key.length} bytes, not the ${VAULT_KEY_BYTES} random bytes of a vault key`);
  }
  return key;
}
