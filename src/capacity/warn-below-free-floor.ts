// At start: says when the cache's filesystem already has less free space than
// --min-free-bytes, which would refuse every pull that adds bytes (the default
// 1 GiB on a small disk), instead of leaving the operator to learn it from one.
import { statfs } from "node:fs/promises";
import type { Logger } from "pino";

/** Logs a warning when `root`'s filesystem has less than `minFreeBytes` free; returns its free bytes. */
export async function warnBelowFreeFloor(root: string, minFreeBytes: number, logger: Logger): Promise<number | undefined> {
  let freeBytes: number;
  try {
    const fs = await statfs(root);
    freeBytes = fs.bavail * fs.bsize;
  } catch (err) {
    // only a warning is at stake: each pull reads the free space again and fails naming the error
    logger.warn({ cacheDir: root, err }, "could not read the free space of the cache's filesystem");
    return undefined;
  }
  if (minFreeBytes > 0 && freeBytes < minFreeBytes) {
    logger.warn(
      { cacheDir: root, freeBytes, minFreeBytes },
      `the cache's filesystem has ${freeBytes} bytes free, less than --min-free-bytes (${minFreeBytes}): every pull that adds bytes will be refused until there is more; free space there, or lower --min-free-bytes (0 turns the check off)`,
    );
  }
  return freeBytes;
}
