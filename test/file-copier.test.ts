import { execFile } from "node:child_process";
import { readFileSync, readdirSync, readlinkSync } from "node:fs";
import { mkdtemp, open, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { Worker } from "node:worker_threads";
import { expect } from "chai";
import { FileCopier, HASH_BEHIND_FROM_BYTES } from "../src/cache/file-copier.js";
import { ModelCacheError } from "../src/errors.js";
import { mountSmallDisk, type SmallDisk } from "./support/small-disk.js";
import { patternedBytes, sha256 } from "./support/source-dir.js";

const run = promisify(execFile);
const MiB = 1024 * 1024;

/** Descriptors of this process (its worker threads' included) open on `path`. */
function openDescriptorsOf(path: string): number {
  return readdirSync("/proc/self/fd").filter((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`) === path;
    } catch {
      // closed between the listing and the look: not open
      return false;
    }
  }).length;
}

// The worker-pool copier on its own: the plain loop for small files, and for
// large ones the copy hashed behind (a second thread hashing what has landed
// in the copy while the worker copies).
describe("FileCopier", () => {
  let dir: string;
  let copier: FileCopier | undefined;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "modelcache-copier-"));
  });
  afterEach(async () => {
    await copier?.close();
    copier = undefined;
    await rm(dir, { recursive: true, force: true });
  });

  async function copyOf(content: Buffer, options: ConstructorParameters<typeof FileCopier>[0] = {}): Promise<{ sha256: string; written: Buffer; reported: number }> {
    copier = new FileCopier(options);
    const from = join(dir, "source.bin");
    const to = join(dir, "copy.bin");
    await writeFile(from, content);
    let reported = 0;
    const sha = await copier.copy(from, to, content.length, new AbortController().signal, (bytes) => (reported += bytes));
    return { sha256: sha, written: await readFile(to), reported };
  }

  it("copies a file of the hash-behind size or more hashing what landed behind the copy, with the sha256 of its bytes, each byte reported once", async () => {
    // not a whole number of chunks: the last one is short
    const content = patternedBytes(HASH_BEHIND_FROM_BYTES + 12_345);
    const copied = await copyOf(content);
    expect(copier!.copied).to.deep.equal({ hashedBehind: 1, plain: 0 });
    expect(copied.sha256).to.equal(sha256(content));
    expect(copied.written.equals(content)).to.equal(true);
    expect(copied.reported).to.equal(content.length);
  });

  it("copies a smaller file with the plain loop", async () => {
    const content = patternedBytes(3 * MiB + 7);
    const copied = await copyOf(content);
    expect(copier!.copied).to.deep.equal({ hashedBehind: 0, plain: 1 });
    expect(copied.sha256).to.equal(sha256(content));
    expect(copied.written.equals(content)).to.equal(true);
  });

  for (const [way, hashBehindFromBytes] of [
    ["hashed-behind", 1],
    ["plain", Number.MAX_SAFE_INTEGER],
  ] as const) {
    it(`fails the ${way} copy of a source that grew or shrank since it was listed, naming both sizes`, async () => {
      const content = patternedBytes(5 * MiB);
      copier = new FileCopier({ hashBehindFromBytes });
      const from = join(dir, "source.bin");
      await writeFile(from, content);
      const signal = new AbortController().signal;
      for (const listed of [content.length - 1, content.length + MiB]) {
        const to = join(dir, `copy-${listed}.bin`);
        const error = await copier.copy(from, to, listed, signal, () => undefined).then(
          () => undefined,
          (err: unknown) => err,
        );
        expect(error).to.be.instanceOf(ModelCacheError);
        expect((error as ModelCacheError).kind).to.equal("aborted");
        expect((error as Error).message).to.include(`listed with ${listed} bytes`).and.include("changed while it was being read");
      }
    });

    it(`never stores bytes other than those the ${way} copy hashed, while the source is rewritten throughout`, async () => {
      const size = 24 * MiB;
      copier = new FileCopier({ hashBehindFromBytes });
      const from = join(dir, "source.bin");
      await writeFile(from, patternedBytes(size));
      // a thread that overwrites 64 KiB ranges of the source with changing bytes until told to stop
      const stop = new Int32Array(new SharedArrayBuffer(4));
      const writer = new Worker(
        `const { workerData, parentPort } = require("node:worker_threads");
         const { openSync, writeSync, closeSync } = require("node:fs");
         const fd = openSync(workerData.from, "r+");
         const chunk = Buffer.alloc(65536);
         parentPort.postMessage("writing");
         for (let round = 0; Atomics.load(workerData.stop, 0) === 0; round++) {
           chunk.fill(round & 0xff);
           writeSync(fd, chunk, 0, chunk.length, ((round * 2654435761) >>> 0) % (workerData.size - chunk.length));
         }
         closeSync(fd);`,
        { eval: true, workerData: { from, size, stop } },
      );
      const ended = new Promise((resolve, reject) => writer.once("exit", resolve).once("error", reject));
      await new Promise((resolve) => writer.once("message", resolve));
      try {
        for (let i = 0; i < 3; i++) {
          const to = join(dir, `copy-${i}.bin`);
          const outcome = await copier.copy(from, to, size, new AbortController().signal, () => undefined).then(
            (sha: string) => ({ sha }),
            (error: unknown) => ({ error }),
          );
          if ("sha" in outcome) {
            // stored: the hash names exactly the bytes that landed
            expect(sha256(await readFile(to))).to.equal(outcome.sha);
          } else {
            expect((outcome.error as Error).message).to.include("changed while it was being read");
          }
        }
      } finally {
        Atomics.store(stop, 0, 1);
        await ended;
      }
    });
  }

  it("reports a full disk as RESOURCE_EXHAUSTED, naming the copy, in the copy hashed behind", async function () {
    const disk = await mountSmallDisk(32);
    if (typeof disk === "string") return this.skip();
    try {
      copier = new FileCopier({ hashBehindFromBytes: 1 });
      const from = join(dir, "source.bin");
      await writeFile(from, patternedBytes(48 * MiB));
      const to = join(disk.dir, "copy.bin");
      const error = await copier.copy(from, to, 48 * MiB, new AbortController().signal, () => undefined).then(
        () => undefined,
        (err: unknown) => err,
      );
      expect(error).to.be.instanceOf(ModelCacheError);
      expect((error as ModelCacheError).kind).to.equal("resource_exhausted");
      expect((error as Error).message).to.include(to).and.include("ENOSPC");
      // the source is untouched
      expect((await stat(from)).size).to.equal(48 * MiB);
    } finally {
      await disk.unmount();
    }
  });

  for (const [way, hashBehindFromBytes] of [
    ["hashed-behind", 1],
    ["plain", Number.MAX_SAFE_INTEGER],
  ] as const) {
    it(`ends a ${way} copy when aborted, with the abort's reason, leaving no descriptor of its files open`, async () => {
      copier = new FileCopier({ hashBehindFromBytes });
      const from = join(dir, "source.bin");
      await writeFile(from, patternedBytes(64 * MiB));
      const controller = new AbortController();
      // aborted at its first chunk: both files are open then
      const error = await copier
        .copy(from, join(dir, "copy.bin"), 64 * MiB, controller.signal, () => controller.abort(new Error("stop")))
        .then(
          () => undefined,
          (err: unknown) => err,
        );
      expect((error as Error).message).to.equal("stop");
      expect(openDescriptorsOf(from), "descriptors open on the source").to.equal(0);
      expect(openDescriptorsOf(join(dir, "copy.bin")), "descriptors open on the copy").to.equal(0);
    });
  }

  it("takes a copy that waits for a worker off the queue when aborted, without waiting for the copy ahead of it", async () => {
    copier = new FileCopier({ threads: 1 });
    const from = join(dir, "source.bin");
    await writeFile(from, patternedBytes(64 * MiB));
    const ended: string[] = [];
    const controller = new AbortController();
    // aborted once the copy ahead is under way on the one worker, the other one waiting for it
    const ahead = copier.copy(from, join(dir, "ahead.bin"), 64 * MiB, new AbortController().signal, () => controller.abort(new Error("stop"))).then(() => ended.push("ahead"));
    const queued = copier.copy(from, join(dir, "queued.bin"), 64 * MiB, controller.signal, () => undefined).then(
      () => ended.push("queued copied"),
      (err: Error) => ended.push(`queued ${err.message}`),
    );
    await Promise.all([ahead, queued]);
    expect(ended).to.deep.equal(["queued stop", "ahead"]);
    expect(await stat(join(dir, "queued.bin")).catch(() => undefined), "the queued copy wrote nothing").to.equal(undefined);
  });

  it("ends a hash when aborted, with the abort's reason, leaving no descriptor of its file open", async () => {
    copier = new FileCopier();
    // a pipe: the worker reads what the test writes, and waits in between
    const fifo = join(dir, "fifo");
    await run("mkfifo", [fifo]);
    const controller = new AbortController();
    const hashing = copier.hash(fifo, controller.signal).then(
      () => undefined,
      (err: unknown) => err,
    );
    const writer = await open(fifo, "w");
    try {
      await writer.write(Buffer.alloc(MiB));
      controller.abort(new Error("stop"));
      // the worker's read under way returns, and it stops before the next; one between two reads
      // when the abort came has stopped already, and closed the pipe: this write then has no reader
      await writer.write(Buffer.alloc(MiB)).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== "EPIPE") throw err;
      });
    } finally {
      await writer.close();
    }
    expect(((await hashing) as Error).message).to.equal("stop");
    expect(openDescriptorsOf(fifo), "descriptors open on the file").to.equal(0);
  });

  it("terminates a worker that has not stopped a grace after the abort (a read that does not return), and ends the call", async () => {
    copier = new FileCopier({ stopGraceMs: 200 });
    // a pipe the test holds open and never writes to: the worker's read waits for good
    const fifo = join(dir, "fifo");
    await run("mkfifo", [fifo]);
    const controller = new AbortController();
    const hashing = copier.hash(fifo, controller.signal).then(
      () => "hashed",
      (err: Error) => err.message,
    );
    const writer = await open(fifo, "w");
    try {
      controller.abort(new Error("stop"));
      expect(await hashing).to.equal("stop");
    } finally {
      // lets the terminated worker's read return
      await writer.close();
    }
  });

  describe("a source written to while it is copied", () => {
    let disk: SmallDisk | undefined;
    let frozen = false;
    afterEach(async () => {
      if (frozen) await run("fsfreeze", ["-u", disk!.dir]);
      frozen = false;
      await disk?.unmount();
      disk = undefined;
    });

    for (const [way, hashBehindFromBytes] of [
      ["hashed-behind", 1],
      ["plain", Number.MAX_SAFE_INTEGER],
    ] as const) {
      it(`fails the ${way} copy instead of storing a mix of the old and new bytes`, async function () {
        const mounted = await mountSmallDisk(32);
        if (typeof mounted === "string") return this.skip();
        disk = mounted;
        copier = new FileCopier({ hashBehindFromBytes });
        const from = join(dir, "source.bin");
        const content = patternedBytes(4 * MiB);
        await writeFile(from, content);
        // the copy's destination is on a frozen filesystem: the copy opens its source and notes its state, then waits to create the copy
        await run("fsfreeze", ["-f", disk.dir]);
        frozen = true;
        const copying = copier.copy(from, join(disk.dir, "copy.bin"), content.length, new AbortController().signal, () => undefined).then(
          () => undefined,
          (err: unknown) => err,
        );
        await blockedCreatingAFile();
        // the same size, other bytes: only the source's modification time tells
        const file = await open(from, "r+");
        await file.write(Buffer.from("changed"), 0, 7, content.length - 7);
        await file.close();
        await run("fsfreeze", ["-u", disk.dir]);
        frozen = false;
        const error = await copying;
        expect(error, "the copy succeeded").to.be.instanceOf(ModelCacheError);
        expect((error as ModelCacheError).kind).to.equal("aborted");
        expect((error as Error).message).to.include(from).and.include("changed while it was being read");
      });
    }
  });
});

/**
 * Resolves once a thread of this process (the copier's worker is one) waits
 * in openat(O_CREAT | O_EXCL): the copy creating its destination, which it
 * does only after opening its source and noting the source's state.
 */
async function blockedCreatingAFile(): Promise<void> {
  const openat = process.arch === "arm64" ? 56 : 257;
  const creating = 0o300; // O_CREAT | O_EXCL
  for (;;) {
    for (const tid of readdirSync("/proc/self/task")) {
      let call: string[];
      try {
        call = readFileSync(`/proc/self/task/${tid}/syscall`, "utf8").trim().split(" ");
      } catch {
        // the thread ended since the listing
        continue;
      }
      if (Number(call[0]) === openat && (Number(call[3]) & creating) === creating) return;
    }
    await new Promise((resolve) => setImmediate(resolve));
  }
}
