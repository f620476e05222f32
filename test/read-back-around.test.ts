// A file read back around the page cache and handed to the hashing thread
// (read-back-around.ts), on a real ext4 filesystem (a loop-mounted image:
// tmpfs takes no O_DIRECT): positions inside a device block, blocks handed
// over in place between reads, and a stop while reads are under way.
import { createHash } from "node:crypto";
import { type FileHandle, open, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { expect } from "chai";
import { openDirect } from "../src/cache/direct-writes.js";
import { HashBehind } from "../src/cache/hash-behind.js";
import { ReadBackAround } from "../src/cache/read-back-around.js";
import { BLOCK_BYTES } from "../src/cache/staged-write.js";
import { type SmallDisk, smallDiskOrSkip } from "./support/small-disk.js";
import { patternedBytes } from "./support/source-dir.js";

const SIZE = 3 * BLOCK_BYTES + 777;
const content = patternedBytes(SIZE);
const sha256 = (bytes: Buffer) => createHash("sha256").update(bytes).digest("hex");

describe("reading a download back around the page cache", function () {
  this.timeout(30_000);
  let disk: SmallDisk | undefined;
  let handle: FileHandle;
  let direct: FileHandle;
  let behind: HashBehind;
  let around: ReadBackAround;
  beforeEach(async function () {
    disk = await smallDiskOrSkip(this);
    const path = join(disk.dir, "file");
    await writeFile(path, content);
    handle = await open(path, "r+");
    const opened = await openDirect(path);
    if (!opened) throw new Error("the loop-mounted ext4 refused O_DIRECT");
    direct = opened;
    behind = new HashBehind(handle.fd);
    around = ReadBackAround.open(handle, direct, behind)!;
    expect(around, "blocks probed for direct reads").to.not.equal(undefined);
  });
  afterEach(async () => {
    try {
      await behind?.close();
      await around?.close();
      await direct?.close();
      await handle?.close();
    } finally {
      await disk?.unmount();
      disk = undefined;
    }
  });

  it("hashes the file in order when what has landed ends inside a device block, again and again", async () => {
    for (const end of [5000, 5001, 8192, BLOCK_BYTES + 3, 2 * BLOCK_BYTES - 1, SIZE]) {
      around.reach(end);
      await around.drained();
      expect(around.handed).to.equal(end);
    }
    expect(await behind.finish(SIZE)).to.equal(sha256(content));
  });

  it("hashes blocks handed over in place between the bytes it reads back", async () => {
    around.reach(BLOCK_BYTES);
    // the next block handed over in place, before the bytes before it are read back
    const block = Buffer.from(new SharedArrayBuffer(BLOCK_BYTES));
    content.copy(block, 0, BLOCK_BYTES, 2 * BLOCK_BYTES);
    around.handedInPlace(BLOCK_BYTES, 2 * BLOCK_BYTES);
    const fed = behind.feed(block, BLOCK_BYTES, BLOCK_BYTES);
    around.reach(SIZE);
    await around.drained();
    await fed;
    expect(await behind.finish(SIZE)).to.equal(sha256(content));
    expect(around.takesInPlace(0), "in place only where nothing was handed over").to.equal(false);
    expect(() => around.handedInPlace(0, 1)).to.throw(/not at/);
  });

  it("stops with reads under way, and fails the hash when what landed runs past the file's end", async () => {
    around.reach(SIZE);
    await behind.close();
    await around.close();
    // another file's reader, told more landed than the file holds
    const shortBehind = new HashBehind(handle.fd);
    const short = ReadBackAround.open(handle, direct, shortBehind)!;
    try {
      short.reach(SIZE + 4096);
      await short.drained();
      expect(String(short.readFailure)).to.match(/the file ended at \d+ bytes, before/);
      let failure: unknown;
      await shortBehind.finish(SIZE + 4096).catch((err: unknown) => (failure = err));
      expect(String(failure), "the hashing thread, reading the rest itself, finds the end too").to.match(/ended at/);
    } finally {
      await shortBehind.close();
      await short.close();
    }
  });

  it("lets the hashing thread read the rest through the page cache once a read fails, and the hash holds", async () => {
    await behind.close();
    await around.close();
    // a descriptor whose first read fails as a disk would
    let reads = 0;
    const failing = new Proxy(direct, {
      get(target, key) {
        if (key !== "read") return Reflect.get(target, key, target) as unknown;
        return (...args: Parameters<FileHandle["read"]>) => {
          reads += 1;
          return reads === 1 ? Promise.reject(Object.assign(new Error("EIO: i/o error, read"), { code: "EIO" })) : (target.read as (...a: unknown[]) => unknown)(...args);
        };
      },
    });
    const failingBehind = new HashBehind(handle.fd);
    const reader = ReadBackAround.open(handle, failing, failingBehind)!;
    try {
      reader.reach(2 * BLOCK_BYTES);
      await reader.drained();
      expect((reader.readFailure as NodeJS.ErrnoException).code).to.equal("EIO");
      expect(reader.takesInPlace(reader.handed), "no block handed over in place after a failed read").to.equal(false);
      reader.reach(SIZE);
      await reader.drained();
      expect(await failingBehind.finish(SIZE)).to.equal(sha256(content));
    } finally {
      await failingBehind.close();
      await reader.close();
    }
  });
});
