// Hashing a file while it is written, on the hashing thread: blocks handed
// over in shared memory, hashed in place, and what the file holds, read back
// up to where the writer says its bytes have landed; all in order.
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, open, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { HashBehind, hashWhole } from "../src/cache/hash-behind.js";

describe("hashing a file as it is written", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "modelcache-hash-behind-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("hashes what the file holds, in order, though its parts were written out of order", async () => {
    const bytes = randomBytes(5 * 1024 * 1024 + 123);
    const handle = await open(join(dir, "partial"), "w+");
    try {
      await handle.truncate(bytes.length);
      const hashing = new HashBehind(handle.fd);
      const cut = [0, 1_000_000, 3_500_000, bytes.length];
      // the second part lands first: nothing past the first byte not yet written may be hashed
      await handle.write(bytes, cut[1], cut[2]! - cut[1]!, cut[1]);
      hashing.reach(0);
      await handle.write(bytes, 0, cut[1], 0);
      hashing.reach(cut[2]!);
      await handle.write(bytes, cut[2], cut[3]! - cut[2]!, cut[2]);
      hashing.reach(cut[3]!);
      expect(await hashing.finish(bytes.length)).to.equal(createHash("sha256").update(bytes).digest("hex"));
      await hashing.close();
    } finally {
      await handle.close();
    }
  });

  it("fails when the file holds fewer bytes than the writer said landed", async () => {
    const handle = await open(join(dir, "short"), "w+");
    try {
      await handle.write(randomBytes(1000), 0, 1000, 0);
      const hashing = new HashBehind(handle.fd);
      hashing.reach(1000);
      const failure = await hashing.finish(4096).then(
        () => undefined,
        (err: Error) => err,
      );
      expect(failure?.message).to.match(/ended at 1000 bytes/);
    } finally {
      await handle.close();
    }
  });

  it("lets the descriptor be closed once close() resolves, mid-file", async () => {
    const handle = await open(join(dir, "cancelled"), "w+");
    const bytes = randomBytes(2 * 1024 * 1024);
    await handle.write(bytes, 0, bytes.length, 0);
    const hashing = new HashBehind(handle.fd);
    hashing.reach(1024 * 1024);
    await hashing.close();
    await handle.close();
    // a second hash of another file runs on the same thread unharmed
    const again = await open(join(dir, "again"), "w+");
    try {
      await again.write(bytes, 0, bytes.length, 0);
      const second = new HashBehind(again.fd);
      expect(await second.finish(bytes.length)).to.equal(createHash("sha256").update(bytes).digest("hex"));
    } finally {
      await again.close();
    }
  });

  it("hashes a whole file on disk, and stops reading it when its signal is aborted", async () => {
    const bytes = randomBytes(3 * 1024 * 1024 + 7);
    const path = join(dir, "stored");
    const handle = await open(path, "w");
    await handle.write(bytes);
    await handle.close();
    expect(await hashWhole(path, bytes.length)).to.equal(createHash("sha256").update(bytes).digest("hex"));
    // without a size, all the file holds
    await writeFile(path, Buffer.concat([bytes, Buffer.from("more")]));
    expect(await hashWhole(path)).to.equal(createHash("sha256").update(bytes).update("more").digest("hex"));
    const reason = new Error("the pull was cancelled");
    let failure: unknown;
    await hashWhole(path, bytes.length, AbortSignal.abort(reason)).catch((err: unknown) => (failure = err));
    expect(failure).to.equal(reason);
  });

  it("lets a file hashed beside a large one finish first: the large one is hashed in turns, not in one go", async () => {
    const size = 96 * 1024 * 1024;
    await writeFile(join(dir, "large"), Buffer.alloc(size, 1));
    const small = randomBytes(64 * 1024);
    await writeFile(join(dir, "small"), small);
    const largeHandle = await open(join(dir, "large"), "r");
    const smallHandle = await open(join(dir, "small"), "r");
    try {
      const order: string[] = [];
      // the large file's whole hash is asked for first
      const large = new HashBehind(largeHandle.fd);
      const whole = large.finish(size).then(() => order.push("large"));
      const beside = new HashBehind(smallHandle.fd);
      beside.reach(small.length);
      const digest = await beside.finish(small.length).then((sha256) => {
        order.push("small");
        return sha256;
      });
      expect(digest).to.equal(createHash("sha256").update(small).digest("hex"));
      await whole;
      expect(order).to.deep.equal(["small", "large"]);
      await Promise.all([large.close(), beside.close()]);
    } finally {
      await largeHandle.close();
      await smallHandle.close();
    }
  });

  it("lets the descriptor be closed only once an asked finish is answered: close() waits for it", async () => {
    const size = 48 * 1024 * 1024;
    await writeFile(join(dir, "large"), Buffer.alloc(size, 2));
    const handle = await open(join(dir, "large"), "r");
    try {
      const hashing = new HashBehind(handle.fd);
      let answered = false;
      const finished = hashing.finish(size).then(() => (answered = true));
      // as a download whose final sync failed does: it closes while its hash is still being finished
      await hashing.close();
      expect(answered, "the worker had stopped reading").to.equal(true);
      await finished;
    } finally {
      await handle.close();
    }
  });

  /** `bytes` copied into shared memory, as the download's blocks are. */
  const shared = (bytes: Buffer) => {
    const block = Buffer.from(new SharedArrayBuffer(bytes.length));
    bytes.copy(block);
    return block;
  };

  it("hashes blocks handed over in place, between bytes read back from the file, in order", async () => {
    const bytes = randomBytes(4 * 1024 * 1024 + 99);
    const handle = await open(join(dir, "mixed"), "w+");
    try {
      await handle.truncate(bytes.length);
      const hashing = new HashBehind(handle.fd);
      const cut = [0, 1_500_000, 2_500_000, 3_000_000, bytes.length];
      // the first and third parts are only in the file; the second and fourth are handed over and never written
      await handle.write(bytes, 0, cut[1], 0);
      await handle.write(bytes, cut[2], cut[3]! - cut[2]!, cut[2]);
      hashing.reach(cut[1]!);
      const second = shared(bytes.subarray(cut[1], cut[2]));
      await hashing.feed(second, second.length, cut[1]!);
      // let go of once hashed: what the block holds from now on is not hashed
      second.fill(0);
      hashing.reach(cut[3]!);
      const fourth = shared(bytes.subarray(cut[3]));
      // handed over before the bytes before it are read back: it waits its turn
      const fed = hashing.feed(fourth, fourth.length, cut[3]!);
      await fed;
      expect(await hashing.finish(bytes.length)).to.equal(createHash("sha256").update(bytes).digest("hex"));
      await hashing.close();
    } finally {
      await handle.close();
    }
  });

  it("lets go of every block handed over when the file is closed or stopped, never hashing it after", async () => {
    const handle = await open(join(dir, "closed"), "w+");
    const stop = new Int32Array(new SharedArrayBuffer(Int32Array.BYTES_PER_ELEMENT));
    try {
      const hashing = new HashBehind(handle.fd, stop);
      // a block for bytes 1 MiB on: it cannot be hashed before the first MiB has landed, which never does
      const waiting = shared(randomBytes(1024 * 1024));
      let letGo = false;
      const fed = hashing.feed(waiting, waiting.length, 1024 * 1024).then(() => (letGo = true));
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(letGo, "held while its turn has not come").to.equal(false);
      await hashing.close();
      await fed;
      expect(letGo).to.equal(true);
      // after close, a block is let go of at once
      await hashing.feed(waiting, waiting.length, 0);

      const stopped = new HashBehind(handle.fd, stop);
      Atomics.store(stop, 0, 1);
      const block = shared(randomBytes(4096));
      await stopped.feed(block, block.length, 0);
      const failure = await stopped.finish(4096).then(
        () => undefined,
        (err: Error) => err,
      );
      expect(failure?.message).to.equal("stopped");
    } finally {
      await handle.close();
    }
  });
});
