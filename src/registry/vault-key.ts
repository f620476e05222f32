// The vault's key: 32 random bytes in a file only the server's user may read
// (--vault-key-file, default <data-dir>/vault.key). Created with mode 0600 on
// first start; a key file that its group or others may read is refused.
import { randomBytes } from "node:crypto";
import type { Stats } from "node:fs";
import { open, readFile, stat } from "node:fs/promises";
import { dirname } from "node:path";
import { syncDirectory } from "../fs/durable.js";
import { ModelCacheError, quote } from "../errors.js";

const VAULT_KEY_BYTES = 32;

/** The key in `file`, made there if absent, unless secrets sealed under some key already exist (a new key could not open them). */
export async function loadVaultKey(file: string, sealedSecretsExist: boolean): Promise<Buffer> {
  const info = await checkVaultKeyFile(file);
  if (!info) {
    if (sealedSecretsExist) {
      throw new ModelCacheError(
        "failed_precondition",
        `--vault-key-file ${quote(file)} does not exist, but the registry holds secrets sealed under a key: restore that key file (or point --vault-key-file at it); if it is lost, so are those secrets: make a new key with 'head -c 32 /dev/urandom > ${file} && chmod 600 ${file}' and store each secret again with PutSecret`,
      );
    }
    return createKey(file);
  }
  const key = await readFile(file);
  if (key.length !== VAULT_KEY_BYTES) throw wrongSize(file, key.length);
  return key;
}

/**
 * What can be said of a vault key file before the registry opens: undefined
 * when it does not exist (start makes one), its stat when it is a regular
 * file of the right size that only its owner may read; failed_precondition
 * naming the fix otherwise.
 */
export async function checkVaultKeyFile(file: string): Promise<Stats | undefined> {
  const info = await stat(file).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT") return undefined;
    throw new ModelCacheError("failed_precondition", `cannot read --vault-key-file ${quote(file)}: ${err.code ?? err.message}`);
  });
  if (!info) return undefined;
  if (!info.isFile()) throw new ModelCacheError("failed_precondition", `--vault-key-file ${quote(file)} is not a regular file`);
  if ((info.mode & 0o077) !== 0) {
    throw new ModelCacheError(
      "failed_precondition",
      `--vault-key-file ${quote(file)} may be read by its group or others (mode ${(info.mode & 0o777).toString(8)}): run 'chmod 600 ${file}' and start again`,
    );
  }
  if (info.size !== VAULT_KEY_BYTES) throw wrongSize(file, info.size);
  return info;
}

function wrongSize(file: string, bytes: number): ModelCacheError {
  return new ModelCacheError("failed_precondition", `--vault-key-file ${quote(file)} holds ${bytes} bytes, not the ${VAULT_KEY_BYTES} random bytes of a vault key`);
}

/** A fresh key, written with exclusive create (never over another) and synced, mode 0600. */
async function createKey(file: string): Promise<Buffer> {
  const key = randomBytes(VAULT_KEY_BYTES);
  const handle = await open(file, "wx", 0o600).catch((err: NodeJS.ErrnoException) => {
    throw new ModelCacheError("failed_precondition", `cannot create --vault-key-file ${quote(file)}: ${err.code ?? err.message}`);
  });
  try {
    await handle.writeFile(key);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await syncDirectory(dirname(file));
  return key;
}
