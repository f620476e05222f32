// Writes a download's bytes to its file through a reused 1 MiB block: each
// chunk the HTTP client hands over is copied into the block at once and the
// block is written when full, so the chunks (each socket read allocates its
// own 64 KiB outside V8's heap) die young, and a young-generation collection
// every few MiB received frees them. Left to V8, they are collected only once
// 32 MB of them pile up (its fixed trigger), or, for those that lived through
// a write, at the next full collection: that was the largest part of the
// server's peak memory during a hub pull. A block may go elsewhere than a
// file (a forced pull compares it with the stored copy instead: see
// download-matching.ts).
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import type { FileHandle } from "node:fs/promises";
import { ModelCacheError } from "../errors.js";

const BLOCK_BYTES = 1024 * 1024;
/** received bytes between two young-generation collections */
const COLLECT_EVERY_BYTES = 4 * 1024 * 1024;
/** blocks kept for the next downloads: one per connection a pull uses at once is plenty */
const SPARE_BLOCKS = 8;

const spare: Buffer[] = [];
/**
 * The last write queued on each file. The writes of a file run one at a
 * time: ext4 holds the inode's lock through a buffered write, so several
 * threads writing to one file (the parallel ranges of one download) took
 * turns anyway, and the waiting ones spun on the lock, burning a core.
 */
const lastWrite = new WeakMap<FileHandle, Promise<void>>();
let sinceCollect = 0;

/** Where a full block goes: `length` bytes of `block` for `position` on; resolves once `block` may be reused. */
export type PutBlock = (block: Buffer, length: number, position: number) => Promise<void>;

/** Writes each block at its position in the file, the file's writes one at a time. */
function writeTo(handle: FileHandle): PutBlock {
  return (block, length, position) => {
    const write = async () => {
      // write may write less than asked: go on from where it stopped
      for (let done = 0; done < length; ) {
        done += (await handle.write(block, done, length - done, position + done)).bytesWritten;
      }
    };
    const queued = (lastWrite.get(handle) ?? Promise.resolve()).then(write);
    // the queue only orders the file's writes: a failed write is its own flush's error, not the next one's
    lastWrite.set(
      handle,
      queued.then(
        () => undefined,
        () => undefined,
      ),
    );
    return queued;
  };
}

export class StagedWrite {
  private block: Buffer | undefined = spare.pop() ?? Buffer.allocUnsafeSlow(BLOCK_BYTES);
  private filled = 0;
  private writing: Promise<unknown> | undefined;
  /** a write of the block failed: what it holds is not written again */
  private failed = false;

  private readonly put: PutBlock;

  /** Writes to `to` (a file, or where a PutBlock puts each block) from `position` on; `written` hears each write's length and the end of the bytes written so far. */
  constructor(
    to: FileHandle | PutBlock,
    private position: number,
    private readonly written: (bytes: number, end: number) => void,
  ) {
    this.put = typeof to === "function" ? to : writeTo(to);
  }

  /** The bytes buffered, not yet written. */
  get pending(): number {
    return this.filled;
  }

  /** Copies `chunk` in; writes the block each time it fills, and only then returns a promise. */
  add(chunk: Buffer): Promise<void> | undefined {
    received(chunk.length);
    const copied = chunk.copy(this.block!, this.filled);
    this.filled += copied;
    if (this.filled < BLOCK_BYTES) return undefined;
    return this.flushAndAdd(chunk.subarray(copied));
  }

  private async flushAndAdd(rest: Buffer): Promise<void> {
    for (;;) {
      await this.flush();
      // released meanwhile (its stream destroyed): what is left goes nowhere
      if (!this.block) return;
      const copied = rest.copy(this.block, 0);
      this.filled = copied;
      if (copied < BLOCK_BYTES) return;
      rest = rest.subarray(copied);
    }
  }

  /** Writes what is buffered. */
  async flush(): Promise<void> {
    const length = this.filled;
    if (length === 0) return;
    this.writing = this.put(this.block!, length, this.position);
    try {
      await this.writing;
    } catch (err) {
      this.failed = true;
      throw err;
    } finally {
      this.writing = undefined;
    }
    this.filled = 0;
    this.position += length;
    this.written(length, this.position);
  }

  /**
   * Writes what arrived before `error` ended the stream (a dropped
   * connection, a cancel): those bytes are good, and the next attempt resumes
   * after them. Nothing when the bytes themselves were wrong (data_loss),
   * while a write of the block is under way (its own add() or flush() tells
   * how it ends), or after one failed.
   */
  keepAfter(error: unknown): Promise<void> {
    if (this.writing || this.failed || (error instanceof ModelCacheError && error.kind === "data_loss")) return Promise.resolve();
    return this.flush();
  }

  /** Gives the block back for the next download once no write reads it; nothing more may be added. */
  release(): void {
    const block = this.block;
    this.block = undefined;
    if (!block) return;
    const giveBack = () => {
      if (spare.length < SPARE_BLOCKS) spare.push(block);
    };
    // a write still reading the block (its stream destroyed meanwhile) keeps it until it ends, however it ends
    if (this.writing) this.writing.then(giveBack, giveBack);
    else giveBack();
  }
}

let collectYoung: (() => void) | undefined;

/** Counts received bytes; every few MiB, collects the young generation (where the copied-out chunks are). */
function received(bytes: number): void {
  sinceCollect += bytes;
  if (sinceCollect < COLLECT_EVERY_BYTES) return;
  sinceCollect = 0;
  collectYoung ??= youngCollector();
  collectYoung();
}

function youngCollector(): () => void {
  // V8 gives a collection function only to contexts made while --expose-gc is set
  setFlagsFromString("--expose-gc");
  const gc = runInNewContext("gc") as (options: { type: "minor" }) => void;
  setFlagsFromString("--no-expose-gc");
  return () => gc({ type: "minor" });
}
