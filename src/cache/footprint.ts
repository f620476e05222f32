// The apparent size of every regular file under a directory, without
// following symbolic links.
import { lstat, readdir } from "node:fs/promises";
import { join } from "node:path";

export async function footprintBytes(dir: string): Promise<number> {
  let total = 0;
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  for (const entry of entries) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) total += await footprintBytes(path);
    else if (entry.isFile()) total += (await lstat(path).catch(() => undefined))?.size ?? 0;
  }
  return total;
}
