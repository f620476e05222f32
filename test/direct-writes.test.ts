// Downloads written around the page cache (O_DIRECT), on a real ext4
// filesystem (a loop-mounted image; tmpfs, where /tmp may live, is the page
// cache itself): what stays in memory after a pull, downloads resumed at an
// offset that is no multiple of the device's block or in byte ranges, and a
// server killed in the middle of such writes.
import { execFile } from "node:child_process";
import { mkdir, readFile, stat, truncate, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { status } from "@grpc/grpc-js";
import { expect } from "chai";
import { CacheStatus } from "../generated/modelcache/v1/model_cache.js";
import { spawnServer } from "./support/child-server.js";
import { FakeHub } from "./support/fake-hub.js";
import { type SmallDisk, smallDiskOrSkip } from "./support/small-disk.js";
import { patternedBytes, sha256 } from "./support/source-dir.js";
import { FIXTURE_DIR, type TestServer, call, modelSpec, pull, pullOk, startTestServer } from "./support/test-server.js";

const run = promisify(execFile);
const REPO = "acme/tiny-minilm";
const BIG = 8 * 1024 * 1024;
const big = patternedBytes(BIG);
const FILE = "onnx/model.onnx";

/** The bytes of `path` in the page cache, as util-linux's fincore counts them. */
async function residentBytes(path: string): Promise<number> {
  const { stdout } = await run("fincore", ["--bytes", "--noheadings", "--output", "RES", path]);
  return Number(stdout.trim());
}

describe("downloads written around the page cache", function () {
  this.timeout(60_000);
  let disk: SmallDisk | undefined;
  let hub: FakeHub;
  let t: TestServer | undefined;
  beforeEach(async function () {
    disk = await smallDiskOrSkip(this);
    hub = await FakeHub.serve(REPO, FIXTURE_DIR, { [FILE]: big, "pytorch_model.bin": "weights" });
  });
  afterEach(async () => {
    try {
      await t?.close();
      await hub?.close();
    } finally {
      t = undefined;
      await disk?.unmount();
      disk = undefined;
    }
  });

  const dataDir = () => join(disk!.dir, "data");
  const installed = () => join(t!.cacheRoot, "minilm", FILE);
  const partial = () => join(t!.cacheRoot, ".blobs", "partial", "minilm", hub.commit, FILE);

  async function serve(): Promise<TestServer> {
    await mkdir(dataDir(), { recursive: true });
    // --min-free-bytes 0: the small disk is smaller than the default floor
    t = await startTestServer({ dataDir: dataDir(), hubUrl: hub.url, progressIntervalMs: 0, minFreeBytes: 0 });
    await call(t.client, "registerModel", { model: modelSpec({ source: REPO, revision: "main" }) });
    return t;
  }

  /** A server that fetches FILE alone, 8 MiB in 2 MiB ranges: every idle connection fetches a range of it. */
  async function serveInRanges(): Promise<void> {
    await mkdir(dataDir(), { recursive: true });
    t = await startTestServer({ dataDir: dataDir(), hubUrl: hub.url, progressIntervalMs: 0, minFreeBytes: 0, parallelRangeMinBytes: 1024 * 1024, parallelRangeBelowBytesPerSecond: Infinity });
    await call(t.client, "registerModel", { model: modelSpec({ source: REPO, revision: "main", include: [FILE] }) });
  }

  /** A pull at 8 MiB/s cancelled once a file is past `bytes`, ended: what it fetched is kept for the next. */
  async function pullCancelledPast(bytes: number): Promise<void> {
    hub.faults.bytesPerSecond = 8 * 1024 * 1024;
    const first = await pull(t!.client, { name: "minilm" }, {
      onEvent: (event, stream) => {
        if ((event.fileProgress?.bytesDone ?? 0) > bytes) stream.cancel();
      },
    });
    expect(first.error?.code).to.equal(status.CANCELLED);
    await t!.server.runtime.pulls.find("minilm")?.done;
    hub.faults.bytesPerSecond = undefined;
  }

  it("leaves none of a pulled file's pages in memory, and the file verifies", async () => {
    await serve();
    await pullOk(t!.client, { name: "minilm" });
    // a buffered download leaves every page it wrote in the page cache until memory is needed
    expect(await residentBytes(installed()), "bytes of the pulled file in the page cache").to.be.below(64 * 1024);
    expect(sha256(await readFile(installed()))).to.equal(hub.file(FILE).sha256);
  });

  for (const [how, args, env] of [
    ["--no-direct-writes", ["--no-direct-writes"], {}],
    ["MODELCACHE_NO_DIRECT_WRITES=1", [], { MODELCACHE_NO_DIRECT_WRITES: "1" }],
  ] as const) {
    it(`with ${how}, writes a pull through the page cache: the file's pages stay in memory, and it verifies`, async () => {
      await mkdir(dataDir(), { recursive: true });
      const child = await spawnServer({ dataDir: dataDir(), args: ["--hub-url", hub.url, "--min-free-bytes", "0", ...args], env });
      try {
        await call(child.client, "registerModel", { model: modelSpec({ source: REPO, revision: "main" }) });
        await pullOk(child.client, { name: "minilm" });
        const path = join(disk!.dir, "data", "ai_models_cache", "minilm", FILE);
        // written around the page cache, fewer than 64 KiB of it would be there (the test above)
        expect(await residentBytes(path), "bytes of the pulled file in the page cache").to.be.above(BIG / 2);
        expect(sha256(await readFile(path))).to.equal(hub.file(FILE).sha256);
      } finally {
        await child.kill();
      }
    });
  }

  it("resumes a download kept to an offset inside a device block: only the missing bytes are fetched, and the file verifies", async () => {
    await serve();
    hub.faults.bytesPerSecond = 16 * 1024 * 1024;
    const first = await pull(t!.client, { name: "minilm" }, {
      onEvent: (event, stream) => {
        if (event.fileProgress?.path === FILE && event.fileProgress.bytesDone > 1024 * 1024) stream.cancel();
      },
    });
    expect(first.error?.code).to.equal(status.CANCELLED);
    await t!.server.runtime.pulls.find("minilm")?.done;
    hub.faults.bytesPerSecond = undefined;
    // what was kept, cut to an odd length: the bytes from there on start mid-block
    const kept = (await stat(partial())).size - 1001;
    expect(kept % 4096).to.not.equal(0);
    await truncate(partial(), kept);
    const before = hub.sent(FILE);
    await pullOk(t!.client, { name: "minilm" });
    expect(hub.sent(FILE) - before, "only the missing bytes were fetched").to.equal(BIG - kept);
    // the rest written, and the whole file read back to be hashed, around the page cache: a unit or two through it
    expect(await residentBytes(installed()), "bytes of the resumed file in the page cache").to.be.below(64 * 1024);
    expect(sha256(await readFile(installed()))).to.equal(hub.file(FILE).sha256);
  });

  it("writes a lone file fetched in ranges over several connections at once around the page cache, reads it back so to hash it, and it verifies", async () => {
    await serveInRanges();
    await pullOk(t!.client, { name: "minilm" });
    const ranges = hub.contentRequests(FILE).filter((r) => r.status === 206);
    expect(ranges.length, "ranges asked").to.be.at.least(4);
    expect(new Set(ranges.map((r) => r.range)).size, "each range asked once").to.equal(ranges.length);
    // through the page cache, the ranges that landed ahead of the hashed edge stayed there
    expect(await residentBytes(installed()), "bytes of the pulled file in the page cache").to.be.below(64 * 1024);
    expect(sha256(await readFile(installed()))).to.equal(hub.file(FILE).sha256);
  });

  it("resumes a lone file fetched in ranges from kept ranges that end inside a device block, and verifies it", async () => {
    await serveInRanges();
    await pullCancelledPast(3 * 1024 * 1024);
    // each kept range cut to end 1001 bytes short of a multiple of 4096: the rest of each starts inside a unit
    const statePath = `${partial()}.segments.json`;
    const state = JSON.parse(await readFile(statePath, "utf8")) as { segments: { start: number; end: number; done: number }[] };
    const kept = state.segments.filter((segment) => segment.done > 4096);
    expect(kept.length, "ranges kept with bytes in them").to.be.above(0);
    for (const segment of kept) segment.done = Math.floor(segment.done / 4096) * 4096 - 1001;
    await writeFile(statePath, JSON.stringify(state));
    const before = hub.sent(FILE);
    await pullOk(t!.client, { name: "minilm" });
    const keptBytes = state.segments.reduce((sum, segment) => sum + segment.done, 0);
    expect(hub.sent(FILE) - before, "only the bytes not kept were fetched").to.equal(BIG - keptBytes);
    expect(sha256(await readFile(installed()))).to.equal(hub.file(FILE).sha256);
  });

  it("resumes files fetched in byte ranges, one connection each, from the ranges kept, and verifies them", async () => {
    const shards = Object.fromEntries([1, 2, 3, 4].map((i) => [`shards/model-${i}.safetensors`, Buffer.concat([big.subarray(i * 4096), big.subarray(0, i * 4096)]).subarray(0, 6 * 1024 * 1024)]));
    await hub.close();
    hub = await FakeHub.serve(REPO, FIXTURE_DIR, shards);
    await mkdir(dataDir(), { recursive: true });
    // 6 MiB files cut in 2 MiB ranges; four files, four connections: no connection is idle to fetch ranges side by side
    t = await startTestServer({ dataDir: dataDir(), hubUrl: hub.url, progressIntervalMs: 0, minFreeBytes: 0, parallelRangeMinBytes: 4 * 1024 * 1024, parallelRangeBelowBytesPerSecond: Infinity });
    await call(t.client, "registerModel", { model: modelSpec({ source: REPO, revision: "main", include: ["shards/"] }) });
    await pullCancelledPast(3 * 1024 * 1024);
    const before = Object.keys(shards).map((path) => hub.sent(path));
    let stream: { cancel(): void } | undefined;
    const resumed = pull(t.client, { name: "minilm" }, { onEvent: (_event, s) => (stream = s) });
    const outcome = await Promise.race([resumed, new Promise<"stuck">((resolve) => setTimeout(() => resolve("stuck"), 20_000))]);
    if (outcome === "stuck") {
      stream?.cancel();
      expect.fail("the resumed pull made no end within 20 s");
    }
    expect(outcome.error).to.equal(undefined);
    const fetched = Object.keys(shards).reduce((sum, path, i) => sum + hub.sent(path) - before[i]!, 0);
    expect(fetched, "bytes fetched by the resumed pull").to.be.below(4 * 6 * 1024 * 1024);
    for (const path of Object.keys(shards)) expect(sha256(await readFile(join(t!.cacheRoot, "minilm", path))), path).to.equal(hub.file(path).sha256);
  });

  it("after SIGKILL in the middle of a download, the restart finds no install, resumes from the bytes on disk and verifies the file", async () => {
    await serve();
    await t!.server.close();
    hub.faults.bytesPerSecond = 8 * 1024 * 1024;
    const child = await spawnServer({ dataDir: dataDir(), args: ["--hub-url", hub.url, "--min-free-bytes", "0"] });
    try {
      let halfway!: () => void;
      const reached = new Promise<void>((resolve) => (halfway = resolve));
      const pulling = pull(child.client, { name: "minilm" }, { onEvent: (event) => (event.fileProgress?.bytesDone ?? 0) > 3 * 1024 * 1024 && halfway() });
      // a pull that ended first fails the test below, not by a timeout
      await Promise.race([reached, pulling]);
      await child.kill();
      expect((await pulling).error, "the pull was cut by the kill").to.not.equal(undefined);
    } finally {
      await child.kill();
    }
    hub.faults.bytesPerSecond = undefined;
    const kept = (await stat(partial())).size;
    expect(kept).to.be.above(0).and.below(BIG);
    await t!.restart();
    expect((await call(t!.client, "inspectCache", { name: "minilm", deep: false })).status).to.equal(CacheStatus.CACHE_STATUS_MISSING);
    const before = hub.sent(FILE);
    await pullOk(t!.client, { name: "minilm" });
    expect(hub.sent(FILE) - before, "the bytes on disk were resumed from").to.equal(BIG - kept);
    expect(sha256(await readFile(installed()))).to.equal(hub.file(FILE).sha256);
    expect((await call(t!.client, "inspectCache", { name: "minilm", deep: true })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
  });
});
