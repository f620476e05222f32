import { mkdtemp, open, readFile, rm } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { ModelCacheError } from "../src/errors.js";
import { BLOCK_BYTES, type PutBlock, StagedWrite, giveBack, lendBlock } from "../src/cache/staged-write.js";
import { Writeback } from "../src/cache/writeback.js";
import { patternedBytes } from "./support/source-dir.js";

const MiB = 1024 * 1024;

/** A disk the test holds: a write reads its block only when the test ends it (the last write started), and records what it read. */
function heldWrites() {
  let end: (() => void) | undefined;
  const seen: Buffer[] = [];
  const held = {
    write: (block: Buffer, offset: number, length: number) =>
      new Promise<{ bytesWritten: number }>((resolve) => {
        end = () => {
          seen.push(Buffer.from(block.subarray(offset, offset + length)));
          resolve({ bytesWritten: length });
        };
      }),
  } as unknown as FileHandle;
  return { held, seen, endWrite: () => end!(), started: () => end !== undefined };
}

/**
 * A disk the test holds: each write waits until the test ends it (the
 * functions in `waiting`, in the order the writes came; given an error, the
 * write fails with it), and `asked` keeps each write's position and first
 * byte.
 */
function queuedWrites() {
  const waiting: ((error?: Error) => void)[] = [];
  const asked: { position: number; first: number }[] = [];
  const held = {
    write: (block: Buffer, offset: number, length: number, position: number) =>
      new Promise<{ bytesWritten: number }>((resolve, reject) => {
        asked.push({ position, first: block[offset]! });
        waiting.push((error) => (error ? reject(error) : resolve({ bytesWritten: length })));
      }),
  } as unknown as FileHandle;
  return { held, waiting, positions: () => asked.map((a) => a.position), asked };
}

/** Lets every callback already due run: the puts a test let end go on to what follows them. */
const settle = () => new Promise((resolve) => setImmediate(resolve));

describe("writing a download through a reused block", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "staged-write-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("writes chunks that straddle its blocks each at its place in the file, a block that starts inside a device block ending at its end", async () => {
    const bytes = patternedBytes(5 * MiB + 5);
    const handle = await open(join(dir, "file"), "w+");
    const ends: number[] = [];
    try {
      await handle.write(Buffer.from("kept"), 0, 4, 0);
      const staged = new StagedWrite(handle, 4, (_bytes, end) => ends.push(end));
      // cut where no block boundary falls: 700 KiB, 900 KiB, 3 MiB + 448 KiB (more than a block at once), 5 bytes
      for (const [from, to] of [[0, 700 * 1024], [700 * 1024, 1600 * 1024], [1600 * 1024, 5 * MiB], [5 * MiB, 5 * MiB + 5]]) {
        await staged.add(bytes.subarray(from, to));
      }
      await staged.flush();
      await staged.release();
    } finally {
      await handle.close();
    }
    expect(await readFile(join(dir, "file"))).to.deep.equal(Buffer.concat([Buffer.from("kept"), bytes]));
    // from 4 on: the first block ends at 4096, the next device block's start, every later one is whole
    const whole = Array.from({ length: (5 * MiB) / BLOCK_BYTES }, (_, i) => 4096 + i * BLOCK_BYTES);
    expect(ends).to.deep.equal([...whole, 4 + 5 * MiB + 5]);
  });

  it("lends its block to no other download while a write of its own still reads it", async () => {
    const { held, seen, endWrite, started } = heldWrites();
    const first = new StagedWrite(held, 0, () => undefined);
    // a full block is written while the next one fills
    expect(first.add(Buffer.alloc(BLOCK_BYTES, 0xaa)), "the stream waits for nothing yet").to.equal(undefined);
    await settle();
    expect(started(), "the full block's write is under way").to.equal(true);
    // its stream is destroyed while the write goes on; another download starts and fills both its blocks
    const released = first.release();
    const handle = await open(join(dir, "other"), "w");
    try {
      const second = new StagedWrite(handle, 0, () => undefined);
      await second.add(Buffer.alloc(2 * BLOCK_BYTES - 1, 0xbb));
      endWrite();
      await released;
      await second.release();
    } finally {
      await handle.close();
    }
    expect(seen).to.have.length(1);
    expect(seen[0]!.every((byte) => byte === 0xaa), "the first write's bytes are its own").to.equal(true);
  });
  /** A PutBlock that records each block's memory and a copy of its bytes. */
  const recorded = () => {
    const puts: { memory: ArrayBufferLike; bytes: Buffer; position: number }[] = [];
    const put: PutBlock = async (block, length, position) => {
      puts.push({ memory: block.buffer, bytes: Buffer.from(block.subarray(0, length)), position });
    };
    return { puts, put };
  };

  it("puts a stream of fewer bytes than a block through memory of its own size, and every byte when more arrive than it said", async () => {
    const { puts, put } = recorded();
    const staged = new StagedWrite(put, 0, () => undefined, 2, 5000);
    const bytes = patternedBytes(9000);
    await staged.add(bytes.subarray(0, 5000));
    await staged.add(bytes.subarray(5000));
    await staged.flush();
    await staged.release();
    expect(puts[0]!.memory.byteLength, "a block rounded up to a device block").to.equal(8192);
    expect(Buffer.concat(puts.map((p) => p.bytes))).to.deep.equal(bytes);
    expect(puts.map((p) => p.position)).to.deep.equal([0, 8192]);
  });

  for (const [start, length] of [
    [0, 8192],
    [100, 5000],
  ]) {
    it(`puts a small stream of ${length} bytes from ${start} in one put, from its own memory alone`, async () => {
      const { puts, put } = recorded();
      const staged = new StagedWrite(put, start, () => undefined, 2, length);
      const bytes = patternedBytes(length);
      for (let offset = 0; offset < length; offset += 1000) expect(staged.add(bytes.subarray(offset, offset + 1000)), "the stream never waits").to.equal(undefined);
      await staged.flush();
      await staged.release();
      expect(puts.map((p) => [p.position, p.bytes.length])).to.deep.equal([[start, length]]);
      expect(puts[0]!.memory.byteLength, "not a spare block of a MiB").to.be.below(BLOCK_BYTES);
      expect(puts[0]!.bytes).to.deep.equal(bytes);
    });
  }

  it("lends a spare block to no stream while it is lent, and takes it back for the next", async () => {
    const lent = lendBlock();
    expect(lent.length).to.equal(BLOCK_BYTES);
    const meanwhile = recorded();
    const staged = new StagedWrite(meanwhile.put, 0, () => undefined);
    await staged.add(Buffer.alloc(BLOCK_BYTES, 1));
    await staged.flush();
    await staged.release();
    expect(meanwhile.puts[0]!.memory, "not the lent block").not.to.equal(lent.buffer);
    giveBack(lent);
    const after = recorded();
    const next = new StagedWrite(after.put, 0, () => undefined);
    await next.add(Buffer.alloc(10, 2));
    await next.flush();
    await next.release();
    expect(after.puts[0]!.memory, "the block given back, taken first").to.equal(lent.buffer);
    expect(() => giveBack(lent), "given back twice").to.throw(/not a lent block/);
  });

  it("keeps what arrived only once every put is done when its stream fails while an add waits for both blocks to be put", async () => {
    for (const rest of [0, 100]) {
      const { held, waiting, positions } = queuedWrites();
      const staged = new StagedWrite(held, 0, () => undefined);
      expect(staged.add(Buffer.alloc(BLOCK_BYTES, 1)), "the first block is put while the next fills").to.equal(undefined);
      // the second block fills (and `rest` bytes are left over): this add waits for the first put
      const adding = staged.add(Buffer.alloc(BLOCK_BYTES + rest, 2));
      expect(adding, "both blocks are full").to.not.equal(undefined);
      // the stream fails now: what arrived is kept, after the add has put what it holds
      let kept = false;
      const keeping = staged.keepAfter(new Error("read ECONNRESET")).then(() => (kept = true));
      const puts = rest > 0 ? 3 : 2;
      for (let round = 0; round < puts; round++) {
        await settle();
        expect(kept, `kept before put ${round + 1} of ${puts} ended`).to.equal(false);
        waiting.shift()!();
      }
      await adding;
      await keeping;
      await staged.release();
      expect(positions()).to.deep.equal([0, BLOCK_BYTES, 2 * BLOCK_BYTES].slice(0, puts));
      expect(waiting).to.have.length(0);
    }
  });

  it("with three blocks, takes a block beyond the one being put without waiting, and puts it the moment that put ends, in order", async () => {
    const { held, waiting, asked } = queuedWrites();
    const order = () => asked.map(({ position, first }) => [position / BLOCK_BYTES, first]);
    const written: number[] = [];
    const staged = new StagedWrite(held, 0, (_bytes, end) => written.push(end), 3);
    expect(staged.add(Buffer.alloc(BLOCK_BYTES, 1)), "the first block is put").to.equal(undefined);
    expect(staged.add(Buffer.alloc(BLOCK_BYTES, 2)), "the second waits its turn while the third fills").to.equal(undefined);
    expect(staged.pending).to.equal(2 * BLOCK_BYTES);
    const adding = staged.add(Buffer.alloc(BLOCK_BYTES, 3));
    expect(adding, "all three full: the stream waits").to.not.equal(undefined);
    await settle();
    expect(order(), "one put at a time").to.deep.equal([[0, 1]]);
    waiting.shift()!();
    await settle();
    expect(order(), "the waiting block is put as soon as the first put ends").to.deep.equal([
      [0, 1],
      [1, 2],
    ]);
    waiting.shift()!();
    await adding;
    let flushed = false;
    const flushing = staged.flush().then(() => (flushed = true));
    // the third block's put starts once the second's has ended: each write is let end as it comes
    while (!flushed) {
      await settle();
      waiting.shift()?.();
    }
    await flushing;
    await staged.release();
    expect(order()).to.deep.equal([
      [0, 1],
      [1, 2],
      [2, 3],
    ]);
    expect(written).to.deep.equal([1, 2, 3].map((n) => n * BLOCK_BYTES));
  });

  it("with three blocks, never puts the block waiting its turn after the put before it failed", async () => {
    const { held, waiting, positions } = queuedWrites();
    const staged = new StagedWrite(held, 0, () => undefined, 3);
    staged.add(Buffer.alloc(BLOCK_BYTES, 1));
    staged.add(Buffer.alloc(BLOCK_BYTES, 2));
    await settle();
    waiting.shift()!(Object.assign(new Error("no space left on device"), { code: "ENOSPC" }));
    const error = await staged.flush().then(
      () => undefined,
      (err: unknown) => err,
    );
    expect((error as NodeJS.ErrnoException | undefined)?.code).to.equal("ENOSPC");
    expect(positions(), "the block after the failed put was never written").to.deep.equal([0]);
    await staged.release();
  });

  it("with three blocks, gives its blocks back only once the put under way and the block waiting its turn are both put", async () => {
    const { held, waiting } = queuedWrites();
    const staged = new StagedWrite(held, 0, () => undefined, 3);
    staged.add(Buffer.alloc(BLOCK_BYTES, 1));
    staged.add(Buffer.alloc(BLOCK_BYTES, 2));
    let released = false;
    const releasing = staged.release().then(() => (released = true));
    await settle();
    waiting.shift()!();
    await settle();
    expect(released, "the second block is being put").to.equal(false);
    expect(waiting, "the second block's put started").to.have.length(1);
    waiting.shift()!();
    await releasing;
    expect(released).to.equal(true);
  });

  it("with three blocks, puts nothing past the put under way once the stream's bytes are found wrong, so what is put stays contiguous", async () => {
    const { held, waiting, positions } = queuedWrites();
    const ends: number[] = [];
    const staged = new StagedWrite(held, 0, (_bytes, end) => ends.push(end), 3);
    staged.add(Buffer.alloc(BLOCK_BYTES, 1));
    staged.add(Buffer.alloc(BLOCK_BYTES, 2));
    const adding = staged.add(Buffer.alloc(BLOCK_BYTES, 3));
    expect(adding, "all three full").to.not.equal(undefined);
    let kept = false;
    const keeping = staged.keepAfter(new ModelCacheError("data_loss", "more bytes than asked")).then(() => (kept = true));
    while (!kept) {
      await settle();
      waiting.shift()?.();
    }
    await keeping;
    await adding;
    await staged.release();
    expect(positions(), "only the put under way").to.deep.equal([0]);
    expect(ends).to.deep.equal([BLOCK_BYTES]);
  });

  it("with one block, copies nothing more into it until its put has ended", async () => {
    const { held, seen, endWrite } = heldWrites();
    const staged = new StagedWrite(held, 0, () => undefined, 1);
    const adding = staged.add(Buffer.concat([Buffer.alloc(BLOCK_BYTES, 0xaa), Buffer.alloc(100, 0xbb)]));
    expect(adding, "the stream waits for the put").to.not.equal(undefined);
    await settle();
    endWrite();
    await adding;
    const flushing = staged.flush();
    await settle();
    endWrite();
    await flushing;
    await staged.release();
    expect(seen.map((b) => [b.length, b[0], b.at(-1)])).to.deep.equal([
      [BLOCK_BYTES, 0xaa, 0xaa],
      [100, 0xbb, 0xbb],
    ]);
  });

  it("writes the blocks of one file one at a time, the parallel ranges of a download included, and goes on after one of them fails", async () => {
    // a disk the test watches: how many writes of the file are under way at once
    let underWay = 0;
    let most = 0;
    let calls = 0;
    const landed = new Map<number, number>();
    const watched = {
      write: async (_block: Buffer, _offset: number, length: number, position: number) => {
        calls += 1;
        const failing = calls === 2;
        underWay += 1;
        most = Math.max(most, underWay);
        await new Promise((resolve) => setTimeout(resolve, 5));
        underWay -= 1;
        if (failing) throw Object.assign(new Error("EIO: i/o error, write"), { code: "EIO" });
        landed.set(position, length);
        return { bytesWritten: length };
      },
    } as unknown as FileHandle;
    const ranges = [0, 4, 8].map((start) => new StagedWrite(watched, start * MiB, () => undefined));
    const outcomes = await Promise.allSettled(
      ranges.map(async (staged) => {
        await staged.add(Buffer.alloc(BLOCK_BYTES, 1));
        await staged.flush();
      }),
    );
    expect(most, "writes of the file under way at once").to.equal(1);
    expect(outcomes.map((o) => o.status)).to.deep.equal(["fulfilled", "rejected", "fulfilled"]);
    expect([...landed.keys()].sort((a, b) => a - b)).to.deep.equal([0, 8 * MiB]);
    expect(landed.get(0)).to.equal(BLOCK_BYTES);
  });
});

describe("a download's stream into its file (Writeback.writer)", () => {
  /** a block and a half, then the connection fails */
  const dropped = () =>
    Readable.from(
      (async function* () {
        yield Buffer.alloc(BLOCK_BYTES, 1);
        yield Buffer.alloc(BLOCK_BYTES / 2, 2);
        // the connection fails once both chunks were handed on
        await settle();
        throw new Error("read ECONNRESET");
      })(),
      { objectMode: false },
    );

  /** A disk the test holds: the first write lands at once, the later ones when the test says (or fail as it says). */
  function heldDisk() {
    const writes: { position: number; length: number }[] = [];
    let release: ((error?: Error) => void) | undefined;
    const handle = {
      write: (_block: Buffer, _offset: number, length: number, position: number) => {
        if (writes.length === 0) {
          writes.push({ position, length });
          return Promise.resolve({ bytesWritten: length });
        }
        return new Promise<{ bytesWritten: number }>((resolve, reject) => {
          release = (error) => {
            if (error) return reject(error);
            writes.push({ position, length });
            resolve({ bytesWritten: length });
          };
        });
      },
    } as unknown as FileHandle;
    return { handle, writes, release: (error?: Error) => release!(error), get held() { return release !== undefined; } };
  }

  it("writes what arrived before its source failed, and settle() waits for that write", async () => {
    const disk = heldDisk();
    const writeback = new Writeback(disk.handle);
    const failure = await pipeline(dropped(), writeback.writer(0)).then(() => undefined, (err: Error) => err.message);
    expect(failure).to.equal("read ECONNRESET");
    let settled = false;
    const settling = writeback.settle().then(() => (settled = true));
    await settle();
    expect(disk.held, "the write of the last half block is under way").to.equal(true);
    expect(settled, "settled while that write was under way").to.equal(false);
    disk.release();
    await settling;
    expect(disk.writes).to.deep.equal([{ position: 0, length: BLOCK_BYTES }, { position: BLOCK_BYTES, length: BLOCK_BYTES / 2 }]);
    expect(writeback.writeFailure).to.equal(undefined);
  });

  it("tells how the write of what arrived failed, a full disk rather than the dropped connection", async () => {
    const disk = heldDisk();
    const writeback = new Writeback(disk.handle);
    await pipeline(dropped(), writeback.writer(0)).catch(() => undefined);
    await settle();
    disk.release(Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC" }));
    await writeback.settle();
    expect((writeback.writeFailure?.error as NodeJS.ErrnoException | undefined)?.code).to.equal("ENOSPC");
  });
});
