// Writes a download's bytes to its file through a reused 1 MiB block: each
// chunk the HTTP client hands over is copied into the block at once and the
// block is written when full, so the chunks (each socket read allocates its
// own 64 KiB outside V8's heap) die young, and a young-generation collection
// every few MiB received frees them. Left to V8, they are collected only once
// 32 MB of them pile up (its fixed trigger), or, for those that lived through
// a write, at the next full collection: that was the largest part of the
// server's peak memory during a hub pull. The blocks are shared memory, so
// the hashing thread hashes a block in place (hash-behind.ts), and each sits
// at the offset the kernel takes for a write around the page cache
// (direct-writes.ts). A block may go elsewhere than a file (a forced pull
// compares it with the stored copy instead: see download-matching.ts).
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import type { FileHandle } from "node:fs/promises";
import { ModelCacheError } from "../errors.js";
import { DIRECT_UNIT, alignedOffset, isRefused } from "./direct-writes.js";

export const BLOCK_BYTES = 1024 * 1024;
/** received bytes between two young-generation collections */
const COLLECT_EVERY_BYTES = 4 * 1024 * 1024;
/**
 * blocks kept for the next downloads: two for each large file a pull fetches
 * at once, or one for each range a forced pull compares at once (lent: see
 * lendBlock). A block given back when the pool is full is garbage until V8
 * collects its wrapper, which may be long after: what circulates should fit.
 */
const SPARE_BLOCKS = 12;

const spare: Block[] = [];
/** the blocks whose memory the kernel takes for a direct write */
const directReady = new WeakSet<Buffer>();

/** A block: 1 MiB of shared memory, at the offset direct writes need once a probe found it. */
interface Block {
  /** the whole allocation, DIRECT_UNIT bytes longer than a block */
  memory: Buffer;
  view: Buffer;
  probed: boolean;
  /** a block of BLOCK_BYTES, which goes back to the spare ones (not one made for a small file) */
  pooled: boolean;
}

/** A spare block, or a new one; probed for its direct-write offset once a download opened a direct descriptor. */
function takeBlock(): Block {
  const block = spare.pop() ?? newBlock();
  if (!block.probed) {
    const offset = alignedOffset(block.memory);
    block.probed = offset !== undefined;
    if (typeof offset === "number") {
      block.view = block.memory.subarray(offset, offset + BLOCK_BYTES);
      directReady.add(block.view);
    }
  }
  return block;
}

function newBlock(): Block {
  const memory = Buffer.from(new SharedArrayBuffer(BLOCK_BYTES + DIRECT_UNIT));
  return { memory, view: memory.subarray(0, BLOCK_BYTES), probed: false, pooled: true };
}

/**
 * A block just large enough for a stream of `bytes` (a small file): not one
 * of the spare ones, which are a MiB each. Never written around the page
 * cache: the whole units of a file this small are few, and the probe costs
 * more than they would save. A byte longer than the stream, rounded up to a
 * unit, so that the stream never fills it: filled, it would be put while the
 * stream goes on, and the stream would take a spare block for what follows.
 */
function smallBlock(bytes: number): Block {
  const memory = Buffer.from(new SharedArrayBuffer(Math.ceil((bytes + 1) / DIRECT_UNIT) * DIRECT_UNIT));
  return { memory, view: memory, probed: true, pooled: false };
}

function putBack(block: Block): void {
  if (block.pooled && spare.length < SPARE_BLOCKS) spare.push(block);
}

/**
 * A spare block's memory for other bytes than a stream's (a forced pull reads
 * the stored copy into one to compare), so that the memory kept between
 * pulls is the same few blocks whatever kind of pull came last. Given back
 * with giveBack once nothing reads or writes it.
 */
export function lendBlock(): Buffer {
  const block = takeBlock();
  lent.set(block.view, block);
  return block.view;
}

export function giveBack(view: Buffer): void {
  const block = lent.get(view);
  if (!block) throw new Error("giveBack: not a lent block");
  lent.delete(view);
  putBack(block);
}

const lent = new Map<Buffer, Block>();

/** Whether the kernel takes this block's memory for I/O around the page cache (a lent block's, once a probe found its offset). */
export function isDirectReady(view: Buffer): boolean {
  return directReady.has(view);
}
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

/**
 * Writes each block at its position in the file, the file's writes one at a
 * time. With `direct` (the file's descriptor that writes around the page
 * cache), the whole units of a block that starts at a unit boundary go
 * through it, the rest through `handle`.
 */
export function writeTo(handle: FileHandle, direct?: FileHandle): PutBlock {
  return (block, length, position) => {
    const write = async () => {
      let done = 0;
      if (direct && directReady.has(block) && position % DIRECT_UNIT === 0) {
        const whole = length - (length % DIRECT_UNIT);
        try {
          while (done < whole) done += (await direct.write(block, done, whole - done, position + done)).bytesWritten;
        } catch (err) {
          // refused as asked (a device with other alignment needs): the rest goes through the page cache
          if (!isRefused(err)) throw err;
        }
      }
      // write may write less than asked: go on from where it stopped
      while (done < length) done += (await handle.write(block, done, length - done, position + done)).bytesWritten;
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

/**
 * A stream's bytes, copied into blocks and put in order. Two blocks take
 * turns: while one is being put (written, hashed), the next fills, so the
 * stream waits only when both are full. With three, a full block waits its
 * turn while the third fills, and is put the moment the put before it ends:
 * the puts follow one another with no gap while the stream brings bytes
 * faster than a put takes them (a lone fast download, whose one stream
 * otherwise waited for each put in turn). One put is under way at a time,
 * so each block is put once the bytes before it are.
 */
export class StagedWrite {
  /** the blocks this stream holds: the one being filled, the one being put, the one waiting its turn */
  private held: Block[] | undefined;
  private readonly blocks: 1 | 2 | 3;
  private block: Buffer | undefined;
  private filled = 0;
  /** the put under way, if any: it never rejects, a failure is kept in `failure` */
  private writing: Promise<void> | undefined;
  private writingBlock: Buffer | undefined;
  private writingBytes = 0;
  /** a full block waiting for the put under way to end (three blocks only) */
  private queued: { block: Buffer; length: number; position: number } | undefined;
  /** a put failed: nothing more is put, and the next wait for one throws this */
  private failure: { error: unknown } | undefined;
  /** the stream brought wrong bytes: an add() still waiting hands nothing more on */
  private dropped = false;
  /** the add() that waits for a put (every block full), until it has put and copied all it was given; never rejects */
  private adding: Promise<void> | undefined;

  private readonly put: PutBlock;
  /**
   * What the block takes before it is put: a whole block, but one that
   * starts inside a unit (a download resumed there) ends at the next unit
   * boundary, so that every later block starts on one and can be written
   * around the page cache.
   */
  private capacity: number;

  /**
   * Writes to `to` (a file, or where a PutBlock puts each block) from
   * `position` on; `written` hears each put's length and the end of the bytes
   * put so far. With `blocks` 1, the stream waits for each put (a put that
   * is quick, or memory that counts more than speed). `bytes`, when known,
   * is how many the stream brings: fewer than a block take a block of their
   * own size.
   */
  constructor(
    to: FileHandle | PutBlock,
    private position: number,
    private readonly written: (bytes: number, end: number) => void,
    blocks: 1 | 2 | 3 = 2,
    bytes?: number,
  ) {
    // the other blocks are taken when the first is first put: a small file never takes them
    const small = bytes !== undefined && bytes < BLOCK_BYTES;
    this.held = [small ? smallBlock(bytes) : takeBlock()];
    this.blocks = blocks;
    this.block = this.held[0]!.view;
    this.put = typeof to === "function" ? to : writeTo(to);
    // a small block is never written around the page cache: it takes the whole stream wherever it starts
    this.capacity = small ? this.block.length : position % DIRECT_UNIT === 0 ? BLOCK_BYTES : DIRECT_UNIT - (position % DIRECT_UNIT);
  }

  /** The bytes taken and not yet put (buffered, waiting, or being put). */
  get pending(): number {
    return this.filled + (this.queued?.length ?? 0) + this.writingBytes;
  }

  /** Copies `chunk` in; returns a promise only when the stream must wait (its blocks full). */
  add(chunk: Buffer): Promise<void> | undefined {
    chunkReceived(chunk.length);
    const copied = copyInto(this.block!, this.filled, chunk, this.capacity - this.filled);
    this.filled += copied;
    if (this.filled < this.capacity) return undefined;
    if (this.blocks > 1 && !this.failure && copied === chunk.length && this.mayHandOn()) {
      this.handOn();
      return undefined;
    }
    const adding = this.putAndAdd(chunk.subarray(copied));
    this.adding = adding.then(
      () => undefined,
      () => undefined,
    );
    return adding;
  }

  private async putAndAdd(rest: Buffer): Promise<void> {
    for (;;) {
      while (!this.mayHandOn()) await this.writing;
      if (this.failure) throw this.failure.error;
      // released meanwhile (its stream destroyed), or its bytes found wrong: what is left goes nowhere
      if (!this.block || this.dropped) return;
      this.handOn();
      // one block: it takes the next bytes only once it is put
      if (this.blocks === 1) await this.putWritten();
      if (!this.block) return;
      const copied = copyInto(this.block, 0, rest, this.capacity);
      this.filled = copied;
      if (copied < this.capacity) return;
      rest = rest.subarray(copied);
    }
  }

  /** Whether the full block can be handed on now: no put under way, or (three blocks) none waiting its turn. */
  private mayHandOn(): boolean {
    return !this.writing || (this.blocks === 3 && !this.queued);
  }

  /** Hands the filled block on (put now, or next) and turns to a free one; mayHandOn() must hold. */
  private handOn(): void {
    const full = { block: this.block!, length: this.filled, position: this.position };
    if (this.writing) this.queued = full;
    else this.startPut(full);
    this.position += full.length;
    this.filled = 0;
    this.block = this.freeBlock();
    this.capacity = this.block.length;
  }

  /** A held block neither being put nor waiting, or a new one while fewer than `blocks` are held; one block: that one. */
  private freeBlock(): Buffer {
    const held = this.held!;
    const free = held.find((b) => b.view !== this.writingBlock && b.view !== this.queued?.block);
    if (free) return free.view;
    if (held.length < this.blocks) {
      const block = takeBlock();
      held.push(block);
      return block.view;
    }
    // one block, being put: the stream takes the next bytes only once it is (putAndAdd waits)
    return held[0]!.view;
  }

  /** Starts putting `full`; then the block waiting its turn, if any, unless this put fails. */
  private startPut(full: { block: Buffer; length: number; position: number }): void {
    const { block, length, position } = full;
    this.writingBlock = block;
    this.writingBytes = length;
    this.writing = this.put(block, length, position).then(
      () => {
        this.writing = undefined;
        this.writingBlock = undefined;
        this.writingBytes = 0;
        const next = this.queued;
        this.queued = undefined;
        try {
          this.written(length, position + length);
          if (next && !this.failure) this.startPut(next);
        } catch (error) {
          // nobody awaits this callback: a throw here is the next wait's failure, not an unhandled rejection
          this.writingBlock = undefined;
          this.writingBytes = 0;
          this.failure ??= { error };
        }
      },
      (error: unknown) => {
        this.writing = undefined;
        this.writingBlock = undefined;
        this.writingBytes = 0;
        this.failure ??= { error };
        // the block waiting its turn is never put: the bytes after a failed put are not the file's
        this.queued = undefined;
      },
    );
  }

  /** Resolves once no put is under way, none waits its turn, and no add() waits; never rejects. */
  private async settled(): Promise<void> {
    await this.adding;
    while (this.writing) await this.writing;
  }

  /** Waits until no put is under way nor waiting its turn; throws a put's failure, or an earlier one. */
  private async putWritten(): Promise<void> {
    while (this.writing) await this.writing;
    if (this.failure) throw this.failure.error;
  }

  /** Puts what is buffered, and waits until every byte taken is put. */
  async flush(): Promise<void> {
    // an add() still waiting (its stream destroyed meanwhile) puts in turn first: one put at a time, in order
    await this.adding;
    await this.putWritten();
    if (this.filled === 0 || !this.block) return;
    this.startPut({ block: this.block, length: this.filled, position: this.position });
    this.position += this.filled;
    this.filled = 0;
    await this.putWritten();
  }

  /**
   * Puts what arrived before `error` ended the stream (a dropped connection,
   * a cancel): those bytes are good, and the next attempt resumes after
   * them. Nothing when the bytes themselves were wrong (data_loss). Throws
   * the failure of a put, the one under way or an earlier one: the disk's
   * error says more than the stream's.
   */
  keepAfter(error: unknown): Promise<void> {
    // wrong bytes are not put; the put under way ends first, however it ends
    if (error instanceof ModelCacheError && error.kind === "data_loss") {
      // neither the block waiting its turn nor one an add() still waits to hand on: the bytes put stay contiguous
      this.dropped = true;
      this.queued = undefined;
      return this.settled();
    }
    return this.flush();
  }

  /**
   * Gives the blocks back for the next download once no put reads them;
   * nothing more may be added. Resolves then (a put still under way, its
   * stream destroyed meanwhile, keeps them until it ends, however it ends).
   */
  async release(): Promise<void> {
    const held = this.held;
    this.block = undefined;
    this.held = undefined;
    if (!held) return;
    await this.settled();
    for (const block of held) putBack(block);
  }
}

/**
 * Copies up to `room` bytes of `chunk` into `block` at `offset`; returns how
 * many. Buffer.copy and TypedArray.set copy into shared memory byte by byte
 * (relaxed atomics), at a third of memcpy's speed: that was a tenth of the
 * main thread's time in a hub pull. fill() with a buffer as the value copies
 * with memcpy, once when the range is the value's length.
 */
function copyInto(block: Buffer, offset: number, chunk: Buffer, room: number): number {
  const length = Math.min(chunk.length, room);
  if (length > 0) block.fill(length === chunk.length ? chunk : chunk.subarray(0, length), offset, offset + length);
  return length;
}

let collectYoung: (() => void) | undefined;

/** Counts received bytes; every few MiB, collects the young generation (where the copied-out chunks are). */
export function chunkReceived(bytes: number): void {
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
  // the young generation these collections find holds next to nothing: handing it to helper threads
  // cost more than it saved (a collection's pause 0.37 ms on one thread against 0.63 ms in parallel)
  setFlagsFromString("--no-parallel-scavenge");
  return () => gc({ type: "minor" });
}
