// fsync helpers: a rename is only durable once its directory is synced, and
// a file's bytes only once the file is.
import { open, rename, rm } from "node:fs/promises";
import { dirname } from "node:path";

export async function syncDirectory(path: string): Promise<void> {
  const handle = await open(path, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Writes `data` to `path` through a synced temp file and a rename, then syncs the directory. */
export async function writeFileDurably(path: string, data: string | Buffer, mode = 0o644): Promise<void> {
  const temp = `${path}.tmp`;
  await rm(temp, { force: true });
  const handle = await open(temp, "w", mode);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
  try {
    await rename(temp, path);
  } catch (err) {
    await rm(temp, { force: true });
    throw err;
  }
  await syncDirectory(dirname(path));
}
