// Progressive writeback for a file being downloaded: after every few MiB
// written, the file's dirty pages are handed to the disk (fdatasync on the
// thread pool) while the download goes on, so the fsync that makes the
// finished file durable has only the tail left to write. Without it the
// kernel holds the whole file in memory until that final fsync, and the disk
// sits idle for the whole transfer. A failed sync is never forgotten: after
// one, Linux may report later syncs of the same file as successful although
// the pages it failed to write are gone, so the first error fails the file.
import type { FileHandle } from "node:fs/promises";
import { Writable } from "node:stream";
import type { HashBehind } from "./hash-behind.js";
import type { ReadBackAround } from "./read-back-around.js";
import { type PutBlock, StagedWrite, writeTo } from "./staged-write.js";

// every sync forces a flush of the disk's cache and stalls the writes around
// it: on a virtual disk, syncing every 16 MiB made a 1 GiB hub pull 1.7x
// slower than syncing once at the end, every 64 MiB cost little
const EVERY_BYTES = 64 * 1024 * 1024;

/** How a file's bytes are made durable: `data` for the background syncs, `all` for the final one. */
export interface FileSync {
  data(handle: FileHandle): Promise<void>;
  all(handle: FileHandle): Promise<void>;
}

export const fileSync: FileSync = {
  data: (handle) => handle.datasync(),
  all: (handle) => handle.sync(),
};

export interface WritebackOptions {
  sync?: FileSync;
  /** the file's descriptor that writes around the page cache (direct-writes.ts), if it has one */
  direct?: FileHandle;
  /**
   * Called as a background sync starts; what it returns is called once that
   * sync has succeeded, when every write that had ended before it began is
   * on the disk (resume state may then count those bytes).
   */
  checkpoint?: () => () => void;
}

export class Writeback {
  private sinceSync = 0;
  private syncing: Promise<void> | undefined;
  private failure: { error: unknown } | undefined;
  /** the write of what a failed stream had received (see writer), until it has ended */
  private keeping: Promise<void> | undefined;
  private keepFailure: { error: unknown } | undefined;
  private readonly sync: FileSync;

  constructor(
    private readonly handle: FileHandle,
    private readonly options: WritebackOptions = {},
  ) {
    this.sync = options.sync ?? fileSync;
  }

  /** The first failed sync of this file, if any: what was written cannot be trusted to be on the disk. */
  get syncFailure(): { error: unknown } | undefined {
    return this.failure;
  }

  /**
   * The failure of the write of what a failed stream had received, if any: a
   * pipeline rejects with its source's error without waiting for it, and the
   * disk's error says more (a full disk is no network error).
   */
  get writeFailure(): { error: unknown } | undefined {
    return this.keepFailure;
  }

  /** Notes `bytes` written; starts a background datasync when enough have piled up and none is running. */
  wrote(bytes: number): void {
    this.sinceSync += bytes;
    if (this.sinceSync < EVERY_BYTES || this.syncing || this.failure) return;
    this.sinceSync = 0;
    const reached = this.options.checkpoint?.();
    this.syncing = this.sync
      .data(this.handle)
      .then(
        () => reached?.(),
        // kept, not thrown here: finish() rethrows it once the writes in flight have settled
        (error: unknown) => {
          this.failure ??= { error };
        },
      )
      .finally(() => {
        this.syncing = undefined;
      });
  }

  /**
   * A stream writing to the file from `start` on, noting what it wrote. Unlike
   * FileHandle.createWriteStream it leaves the handle open and unreferenced when
   * it finishes, so the caller can sync and close it. Each block written is
   * handed to `hashing` as well, hashed in place while it is written; or,
   * with `readBack`, read back once it has landed (a resumed download: a
   * block handed over would wait until the bytes kept before it are read
   * back, its stream with it): by a ReadBackAround, the block written
   * around the page cache where the file allows it, or by `hashing` itself
   * ("through the page cache"), the block written through it. `bytes`, when
   * known, is how many the stream brings (a small file takes a block of its
   * size).
   */
  writer(start: number, hashing?: HashBehind, readBack?: ReadBackAround | "through the page cache", bytes?: number): Writable {
    const put = readBack === undefined ? this.put(hashing) : readBack === "through the page cache" ? writeTo(this.handle) : this.put();
    const written = (length: number, end: number) => {
      this.wrote(length);
      if (readBack === "through the page cache") hashing?.reach(end);
      else readBack?.reach(end);
    };
    const staged = new StagedWrite(put, start, written, 2, bytes);
    const keepWhatArrived = (write: Promise<void>) =>
      (this.keeping = write.then(
        () => undefined,
        (error: unknown) => {
          this.keepFailure ??= { error };
        },
      ));
    return new Writable({
      write(chunk: Buffer, _encoding, done) {
        const full = staged.add(chunk);
        if (full) full.then(() => done(), done);
        else done();
      },
      final(done) {
        staged.flush().then(() => done(), done);
      },
      destroy(error, done) {
        // what arrived before the source failed (a dropped connection, a cancel) is written;
        // settle() waits for that write, writeFailure tells how it failed
        const keep = error ? keepWhatArrived(staged.keepAfter(error)) : Promise.resolve();
        void keep.then(() => {
          void staged.release();
          done(error);
        });
      },
    });
  }

  /**
   * How a block is put in the file: around the page cache where the file
   * allows it, and handed to `hashing` (when given) at the same time.
   */
  put(hashing?: HashBehind): PutBlock {
    const write = writeTo(this.handle, this.options.direct);
    return hashing ? (block, length, position) => writeAndHash(write, hashing, block, length, position) : write;
  }

  /** Waits for a background sync, then makes every written byte durable; throws the first sync error, if any. */
  async finish(): Promise<void> {
    await this.settle();
    if (this.failure) throw this.failure.error;
    await this.sync.all(this.handle).catch((error: unknown) => {
      this.failure ??= { error };
      throw error;
    });
  }

  /** Waits for the writes and the background sync under way to end, so the handle can be closed; never throws (finish() and writeFailure report). */
  async settle(): Promise<void> {
    // the write of what a failed stream had received may start a background sync as it lands
    await this.keeping;
    await this.syncing;
  }
}

/**
 * Writes a block and hands it to the hashing thread at once; settles once
 * both have let go of it (the block is reused then), with the write's
 * failure if it failed.
 */
export async function writeAndHash(write: PutBlock, hashing: HashBehind, block: Buffer, length: number, position: number): Promise<void> {
  const [written] = await Promise.allSettled([write(block, length, position), hashing.feed(block, length, position)]);
  if (written.status === "rejected") throw written.reason;
}
