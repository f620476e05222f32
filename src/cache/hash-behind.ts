// Hashes a file while it is being written, off the main thread, on one
// worker thread shared by every download. The writer hands over each block
// it writes (shared memory, hashed in place while it is written), or, for
// bytes it wrote out of order (another range of the file), says how far the
// file's bytes have landed, and the thread reads those back from the page
// cache through the writer's descriptor. Either way the file's sha256 is fed
// in order. The main thread, which receives every byte from the network, so
// never hashes any: on two cores sha256 was a third of its time in a hub
// pull. A block hashed in place is not read again, which a block written
// around the page cache (direct-writes.ts) could only be from the disk.
// The worker starts with the first download and lets the process exit while
// it has nothing to do. The client is plain JavaScript (hash-behind-client.cjs),
// shared with the copy workers, which hash large files the same way; this
// module gives it its types.
import { type FileHandle, open } from "node:fs/promises";
import { createRequire } from "node:module";
import { filesystemError } from "../errors.js";

export interface HashBehind {
  /** Every byte before `end` has been written: the worker may hash up to there, reading them back. */
  reach(end: number): void;
  /**
   * Hands over the bytes from `position` on: the first `length` bytes of
   * `block` (shared memory), hashed in place. Every byte before `position`
   * must have been handed over or reached first. Resolves once the thread no
   * longer reads `block`; never rejects (finish() tells how the hash ended).
   */
  feed(block: Buffer, length: number, position: number): Promise<void>;
  /** The sha256 of the first `end` bytes, once the worker has hashed them all. */
  finish(end: number): Promise<string>;
  /** Stops hashing; resolves once the worker no longer reads the descriptor. Safe to call after finish(). */
  close(): Promise<void>;
}

/**
 * Starts hashing the file open at `fd` from its first byte; `fd` must stay
 * open until finish() or close() resolves. `stop` (shared memory) set to
 * non-zero ends the reading within 1 MiB, and finish() fails.
 */
export const HashBehind = (createRequire(import.meta.url)("./hash-behind-client.cjs") as { HashBehind: new (fd: number, stop?: Int32Array) => HashBehind }).HashBehind;

/** A flag (shared memory) to start a HashBehind with: set, the thread stops reading within 1 MiB. */
export function stopFlag(): Int32Array {
  return new Int32Array(new SharedArrayBuffer(Int32Array.BYTES_PER_ELEMENT));
}

/**
 * Runs `work`, setting `stop` (and calling `alsoStop`) as soon as `signal`
 * aborts, or at once when it has: so a hash that would read on, after a
 * cancel, for as long as the file is, ends within 1 MiB.
 */
export async function stoppingOnAbort<T>(signal: AbortSignal | undefined, stop: Int32Array, work: () => Promise<T>, alsoStop?: () => void): Promise<T> {
  const stopped = () => {
    alsoStop?.();
    Atomics.store(stop, 0, 1);
  };
  if (signal?.aborted) stopped();
  else signal?.addEventListener("abort", stopped, { once: true });
  try {
    return await work();
  } finally {
    signal?.removeEventListener("abort", stopped);
  }
}

/**
 * The sha256 of the file at `path`, on the hashing thread: of its first
 * `sizeBytes` bytes when given, else of all it holds when opened. Reading
 * stops when `signal` aborts.
 */
export async function hashWhole(path: string, sizeBytes?: number, signal?: AbortSignal): Promise<string> {
  let handle: FileHandle;
  try {
    handle = await open(path, "r");
  } catch (err) {
    throw filesystemError("read back", path, err);
  }
  const stop = stopFlag();
  const hashing = new HashBehind(handle.fd, stop);
  try {
    return await stoppingOnAbort(signal, stop, async () => hashing.finish(sizeBytes ?? (await handle.stat()).size));
  } catch (err) {
    if (signal?.aborted) throw signal.reason;
    throw filesystemError("read back", path, err);
  } finally {
    await hashing.close();
    await handle.close();
  }
}
