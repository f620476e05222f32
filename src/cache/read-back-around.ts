// The bytes of a file being downloaded in ranges, read back in order around
// the page cache and handed to the hashing thread (hash-behind.ts) in shared
// memory, for a file whose blocks are written around the page cache too
// (direct-writes.ts): bytes that never entered the page cache cannot be
// read back from it, and reading them through it would fill it with the
// whole file. Two blocks take turns, so the next read (on the thread pool)
// runs while the thread hashes the last one. The hashing thread itself only
// hashes what it is handed here, until a read fails: from then on it reads
// what is not handed over itself, through the page cache (a filesystem that
// refuses a direct read, or a fault a read through the page cache may not
// meet; one that it meets too fails the hash, and the download with it).
import type { FileHandle } from "node:fs/promises";
import { DIRECT_UNIT } from "./direct-writes.js";
import { type HashBehind, stoppingOnAbort } from "./hash-behind.js";
import { giveBack, isDirectReady, lendBlock } from "./staged-write.js";

const BLOCKS = 2;

export class ReadBackAround {
  /** every byte before it is read back and handed over, or on its way */
  private handedTo = 0;
  /** how far the file's bytes have landed from its start */
  private landedTo = 0;
  /** blocks lent for reads, taken when a read first needs one: a file hashed in place needs none */
  private readonly free: Buffer[] = [];
  private lentCount = 0;
  /** reads and hand-overs under way */
  private readonly underWay = new Set<Promise<void>>();
  /** the first read that failed: the hashing thread reads the rest itself since */
  private failure: { error: unknown } | undefined;
  private stopped = false;

  private constructor(
    private readonly handle: FileHandle,
    private readonly direct: FileHandle,
    private readonly behind: HashBehind,
  ) {}

  /**
   * A reader of the file open at `handle`, and at `direct` around the page
   * cache, handing its bytes to `behind`; undefined when the blocks it would
   * borrow cannot be used for direct reads (no probe found their offset).
   */
  static open(handle: FileHandle, direct: FileHandle, behind: HashBehind): ReadBackAround | undefined {
    const block = lendBlock();
    const ready = isDirectReady(block);
    giveBack(block);
    return ready ? new ReadBackAround(handle, direct, behind) : undefined;
  }

  /** The end of what is read back or on its way: a block handed over in place may start there. */
  get handed(): number {
    return this.handedTo;
  }

  /** Whether a block may be handed over in place at `position`: every byte before it is handed over or on its way, and no read failed. */
  takesInPlace(position: number): boolean {
    return !this.failure && position === this.handedTo;
  }

  /** The failure of a read, if one failed (the hashing thread reads the rest itself since). */
  get readFailure(): unknown {
    return this.failure?.error;
  }

  /** Bytes from `position` to `end` were handed over in place (`position` must be `handed`). */
  handedInPlace(position: number, end: number): void {
    if (position !== this.handedTo) throw new Error(`handed over in place at ${position}, not at ${this.handedTo}`);
    this.handedTo = end;
  }

  /** Every byte before `end` has landed in the file: it is read back as blocks come free. */
  reach(end: number): void {
    this.landedTo = Math.max(this.landedTo, end);
    if (this.failure) this.behind.reach(this.landedTo);
    else this.pump();
  }

  /** Resolves once every read and hand-over under way has ended. Never throws: a failed read is readFailure. */
  async drained(): Promise<void> {
    while (this.underWay.size > 0) await Promise.allSettled(this.underWay);
  }

  /** Starts no more reads: those under way end on their own. */
  stop(): void {
    this.stopped = true;
  }

  /** Stops reading; resolves once no read or hand-over is under way, and gives the blocks back. Never throws. */
  async close(): Promise<void> {
    this.stopped = true;
    while (this.underWay.size > 0) await Promise.allSettled(this.underWay);
    for (const block of this.free.splice(0)) giveBack(block);
    this.lentCount = 0;
  }

  /** A free block, or a newly lent one while fewer than BLOCKS are lent. */
  private takeBlock(): Buffer | undefined {
    if (this.free.length > 0) return this.free.pop();
    if (this.lentCount >= BLOCKS) return undefined;
    this.lentCount += 1;
    return lendBlock();
  }

  private pump(): void {
    while (!this.stopped && !this.failure && this.handedTo < this.landedTo) {
      const block = this.takeBlock();
      if (!block) return;
      const position = this.handedTo;
      // a position inside a unit (a download resumed there) is read up to the unit's end, through the page cache (readAndHand)
      const length = position % DIRECT_UNIT === 0 ? Math.min(block.length, this.landedTo - position) : Math.min(DIRECT_UNIT - (position % DIRECT_UNIT), this.landedTo - position);
      this.handedTo += length;
      const step = this.readAndHand(block, position, length).then(
        () => {
          this.underWay.delete(step);
          this.free.push(block);
          this.pump();
        },
        (error: unknown) => {
          this.underWay.delete(step);
          this.free.push(block);
          this.failure ??= { error };
          // the bytes of this read were never handed over, and the blocks after them wait in the
          // hashing thread for them: it reads them, and all that lands from here on, itself
          this.behind.reach(this.landedTo);
        },
      );
      this.underWay.add(step);
    }
  }

  private async readAndHand(block: Buffer, position: number, length: number): Promise<void> {
    // whole units around the page cache: the last one's bytes past `length` (not landed yet, or past the end) are not used
    // a block whose offset no probe found (lent after the probe's directory went) reads through the page cache
    const aligned = position % DIRECT_UNIT === 0 && isDirectReady(block);
    const asked = aligned ? Math.min(block.length, Math.ceil(length / DIRECT_UNIT) * DIRECT_UNIT) : length;
    const from = aligned ? this.direct : this.handle;
    for (let done = 0; done < length; ) {
      const { bytesRead } = await from.read(block, done, asked - done, position + done);
      done += bytesRead;
      // a read around the page cache stops short only at the file's end (a read through it may stop anywhere)
      if (bytesRead === 0 || (aligned && done % DIRECT_UNIT !== 0 && done < length)) throw new Error(`the file ended at ${position + done} bytes, before ${position + length}`);
    }
    await this.behind.feed(block, length, position);
  }
}

/**
 * The sha256 of the first `end` bytes once `behind` has them all, what
 * `around` (if any) reads back handed over first. A cancel meanwhile (the
 * kept bytes of a resumed file may be most of it) stops both at once:
 * `stop` is the flag `behind` was started with.
 */
export function finishHash(behind: HashBehind, stop: Int32Array, around: ReadBackAround | undefined, end: number, signal: AbortSignal): Promise<string> {
  return stoppingOnAbort(
    signal,
    stop,
    async () => {
      await around?.drained();
      return behind.finish(end);
    },
    () => around?.stop(),
  );
}

/**
 * Closes `behind` and the read-back feeding it, so that their descriptors
 * can be closed: the thread first, which lets go of every block (a block read
 * back waits in it for the ones before), then the reads under way end and
 * the blocks go back. Never throws.
 */
export async function closeHash(behind: HashBehind, around: ReadBackAround | undefined): Promise<void> {
  around?.stop();
  await behind.close();
  await around?.close();
}
