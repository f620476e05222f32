// Writes that bypass the page cache (O_DIRECT) for the blocks of a download
// that are hashed from memory (see hash-behind.ts): such a block reaches the
// disk as it is written, so the fsync that makes the finished file durable
// has almost nothing left to do, where a buffered download left the whole
// file for it (the disk idle while bytes arrived, then the pull waiting on
// writeback). It also spares a copy of every byte into the page cache, and a
// multi-GB pull no longer fills memory with dirty pages that push other
// services' files out. The kernel takes such a write only from memory, at a
// file offset and of a length that are multiples of the device's block
// size: the blocks (staged-write.ts) are probed once for the offset in their
// memory that the kernel accepts, and a write it refuses all the same
// (another filesystem, another device) is made through the page cache.
import { closeSync, constants, openSync, writeSync } from "node:fs";
import { type FileHandle, open } from "node:fs/promises";
import { dirname } from "node:path";
import { filesystemError } from "../errors.js";

/** file offsets and lengths of direct writes are multiples of this (every device's block size divides it) */
export const DIRECT_UNIT = 4096;
// Linux's O_TMPFILE: __O_TMPFILE (the same on x86-64 and arm64) with O_DIRECTORY (not); Node does not export it
const O_TMPFILE = 0o20000000 | constants.O_DIRECTORY;

/** A directory on a filesystem that took a direct open: new blocks are probed there. */
let probeDirectory: string | undefined;

/**
 * A second descriptor of `path` that writes (and reads: read-back-around.ts)
 * around the page cache, or
 * undefined where direct writes are not supported (no O_DIRECT on this
 * system, a filesystem that refuses it).
 */
export async function openDirect(path: string): Promise<FileHandle | undefined> {
  if (constants.O_DIRECT === undefined) return undefined;
  try {
    const handle = await open(path, constants.O_RDWR | constants.O_DIRECT | constants.O_NOFOLLOW);
    probeDirectory = dirname(path);
    return handle;
  } catch (err) {
    // the filesystem does not do direct writes: every block of this file goes through the page cache
    if (isRefused(err)) return undefined;
    throw err;
  }
}

/**
 * openDirect for a file already open at `handle`, unless `directWrites` is
 * false (--no-direct-writes): a failure closes `handle` and is told as the
 * file's.
 */
export async function openDirectBeside(handle: FileHandle, path: string, directWrites = true): Promise<FileHandle | undefined> {
  if (!directWrites) return undefined;
  try {
    return await openDirect(path);
  } catch (err) {
    await handle.close();
    throw filesystemError("open", path, err);
  }
}

/** Closes the descriptor openDirectBeside gave, if any, then `handle`, however the first close ends. */
export async function closeBeside(handle: FileHandle, direct: FileHandle | undefined): Promise<void> {
  try {
    await direct?.close();
  } finally {
    await handle.close();
  }
}

/** Whether a direct open or write failed because the filesystem or device does not take it as asked (EINVAL), not for a fault of its own. */
export function isRefused(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === "EINVAL" || code === "EOPNOTSUPP";
}

/**
 * The offset into `memory` (DIRECT_UNIT bytes longer than what is used of
 * it) at which the kernel takes a direct write, found by writing a unit from
 * each candidate offset to an unnamed temporary file; "none" when no offset
 * is taken, undefined when it could not be told (before any download opened
 * a direct descriptor). Costs a few system calls on the main thread, once
 * per block the process allocates.
 */
export function alignedOffset(memory: Buffer): number | "none" | undefined {
  if (probeDirectory === undefined) return undefined;
  let fd: number;
  try {
    fd = openSync(probeDirectory, O_TMPFILE | constants.O_RDWR | constants.O_DIRECT, 0o600);
  } catch {
    // no unnamed temporary file there (the directory is gone, another kernel): the block is written through the page cache
    return undefined;
  }
  try {
    // memory from the allocator is 16-byte aligned: the candidates go in steps of 16
    for (let offset = 0; offset < DIRECT_UNIT; offset += 16) {
      try {
        writeSync(fd, memory, offset, DIRECT_UNIT, 0);
        return offset;
      } catch (err) {
        // EINVAL is this offset refused; any other failure (a full disk) ends the probe, the block goes through the page cache
        if (!isRefused(err)) return undefined;
      }
    }
    return "none";
  } finally {
    closeSync(fd);
  }
}
