// A small real ext4 filesystem (96 MiB, loop-mounted) for tests of a full disk,
// filled and emptied by a ballast file the test controls. Mounting needs root:
// without it `mountSmallDisk` returns the reason and the test skips.
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, open, rm, stat, statfs, truncate } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

export interface SmallDisk {
  /** the mount point, empty but for the ballast */
  dir: string;
  /** grows the ballast until the filesystem refuses another byte */
  fill(): Promise<void>;
  /** shrinks the ballast by `bytes` */
  release(bytes: number): Promise<void>;
  /** the bytes an unprivileged writer could still use */
  freeBytes(): Promise<number>;
  unmount(): Promise<void>;
}

/** Mounts a fresh ext4 image (96 MiB by default), or says why this machine cannot. */
export async function mountSmallDisk(sizeMiB = 96): Promise<SmallDisk | string> {
  if (process.getuid?.() !== 0) return "mounting a loop filesystem needs root";
  const work = await mkdtemp(join(tmpdir(), "modelcache-small-disk-"));
  const image = join(work, "disk.img");
  const dir = join(work, "mnt");
  await mkdir(dir);
  try {
    await run("truncate", ["-s", `${sizeMiB}M`, image]);
    // -m 0: no blocks reserved for root, so the server (root in CI) sees the same free space as anyone
    await run("mkfs.ext4", ["-q", "-F", "-m", "0", image]);
    await run("mount", ["-o", "loop", image, dir]);
  } catch (err) {
    await rm(work, { recursive: true, force: true });
    return `cannot mount a loop filesystem here: ${(err as Error).message.split("\n")[0]}`;
  }
  const ballast = join(dir, "ballast");
  return {
    dir,
    async fill() {
      const file = await open(ballast, "a");
      try {
        // large steps, then smaller ones, so that the last block is used too
        for (const step of [1024 * 1024, 64 * 1024, 4096, 1024, 1]) {
          const chunk = Buffer.alloc(step, 0x5a);
          for (;;) {
            try {
              const { bytesWritten } = await file.write(chunk);
              if (bytesWritten < step) break;
            } catch (err) {
              if ((err as NodeJS.ErrnoException).code === "ENOSPC") break;
              throw err;
            }
          }
        }
      } finally {
        await file.close();
      }
    },
    async release(bytes) {
      const { size } = await stat(ballast);
      await truncate(ballast, Math.max(0, size - bytes));
    },
    async freeBytes() {
      const fs = await statfs(dir);
      return fs.bavail * fs.bsize;
    },
    async unmount() {
      try {
        await run("umount", [dir]);
      } catch {
        // still busy (a file a failed test left open): detach it now, the kernel frees it once closed,
        // so that no test leaves a mount behind
        await run("umount", ["-l", dir]);
      }
      await rm(work, { recursive: true, force: true });
    },
  };
}

/** Mounts a fresh small disk for the current test, or skips the test naming why this machine cannot. */
export async function smallDiskOrSkip(context: Mocha.Context, sizeMiB?: number): Promise<SmallDisk> {
  const made = await mountSmallDisk(sizeMiB);
  if (typeof made === "string") {
    if (context.currentTest) context.currentTest.title += ` (skipped: ${made})`;
    context.skip();
  }
  return made as SmallDisk;
}
