// Progressive writeback for a file being downloaded: after every few MiB
// written, the file's dirty pages are handed to the disk (fdatasync on the
// thread pool) while the download goes on, so the fsync that makes the
// finished file durable has only the tail left to write. Without it the
// kernel holds the whole file in memory until that final fsync, and the disk
// sits idle for the whole transfer.
import type { FileHandle } from "node:fs/promises";
import { Writable } from "node:stream";

const EVERY_BYTES = 16 * 1024 * 1024;

export class Writeback {
  private sinceSync = 0;
  private syncing: Promise<void> | undefined;

  constructor(private readonly handle: FileHandle) {}

  /** Notes `bytes` written; starts a background datasync when enough have piled up and none is running. */
  wrote(bytes: number): void {
    this.sinceSync += bytes;
    if (this.sinceSync < EVERY_BYTES || this.syncing) return;
    this.sinceSync = 0;
    // a failed background sync is not fatal: the final sync reports any error that matters
    this.syncing = this.handle
      .datasync()
      .catch(() => undefined)
      .finally(() => {
        this.syncing = undefined;
      });
  }

  /**
   * A stream writing to the file from `start` on, noting what it wrote. Unlike
   * FileHandle.createWriteStream it leaves the handle open and unreferenced when
   * it finishes, so the caller can sync and close it.
   */
  writer(start: number): Writable {
    let position = start;
    const write = async (buffers: Buffer[]) => {
      let length = 0;
      for (const buffer of buffers) length += buffer.length;
      // writev may write less than asked: go on from where it stopped
      let written = 0;
      while (written < length) {
        const { bytesWritten } = await this.handle.writev(written === 0 ? buffers : remainder(buffers, written), position + written);
        written += bytesWritten;
      }
      position += length;
      this.wrote(length);
    };
    return new Writable({
      highWaterMark: 1024 * 1024,
      writev(chunks, done) {
        write(chunks.map((c) => c.chunk as Buffer)).then(() => done(), done);
      },
    });
  }

  /** Waits for a background sync, then makes every written byte durable. */
  async finish(): Promise<void> {
    await this.settle();
    await this.handle.sync();
  }

  /** Waits for a background sync to end, so the handle can be closed. */
  async settle(): Promise<void> {
    await this.syncing;
  }
}

/** The buffers' bytes after the first `skip`. */
function remainder(buffers: Buffer[], skip: number): Buffer[] {
  const rest: Buffer[] = [];
  for (const buffer of buffers) {
    if (skip >= buffer.length) skip -= buffer.length;
    else {
      rest.push(skip > 0 ? buffer.subarray(skip) : buffer);
      skip = 0;
    }
  }
  return rest;
}
