import { open, readFile, readdir, rename, stat } from "node:fs/promises";
import { join } from "node:path";
import { Metadata, status } from "@grpc/grpc-js";
import { expect } from "chai";
import { CacheStatus, ModelStatus } from "../generated/modelcache/v1/model_cache.js";
import { spawnServer } from "./support/child-server.js";
import { FakeHub } from "./support/fake-hub.js";
import { captureLogs } from "./support/log-capture.js";
import { patternedBytes, sha256 } from "./support/source-dir.js";
import { FIXTURE_DIR, type TestServer, call, kindOf, modelSpec, pull, pullOk, startTestServer } from "./support/test-server.js";

const REPO = "acme/tiny-minilm";
const BIG = 8 * 1024 * 1024;
const big = patternedBytes(BIG);

describe("pulling from a hub", () => {
  let hub: FakeHub;
  let t: TestServer;
  beforeEach(async () => {
    hub = await FakeHub.serve(REPO, FIXTURE_DIR, { "onnx/model.onnx": big, "pytorch_model.bin": "weights", "manifest.json": "{}" });
    t = await startTestServer({ hubUrl: hub.url, progressIntervalMs: 0 });
    await call(t.client, "registerModel", { model: modelSpec({ source: REPO, revision: "main" }) });
  });
  afterEach(async () => {
    await t.close();
    await hub.close();
  });
  const installed = (path: string) => readFile(join(t.cacheRoot, "minilm", path));
  /** where the store keeps the content the hub lists for `path` */
  const stored = (path: string) => join(t.cacheRoot, ".blobs", "sha256", hub.file(path).sha256);
  const listedFiles = () => hub.files.filter((f) => !f.path.startsWith(".") && f.path !== "manifest.json").map((f) => f.path);

  it("installs the files of the resolved commit, verified, and records the commit", async () => {
    const events = await pullOk(t.client, { name: "minilm" });
    expect(events[0]!.started!.source).to.equal(`hub:${REPO}@${hub.commit}`);
    const manifest = events.at(-1)!.completed!.manifest!;
    expect(manifest.resolvedCommit).to.equal(hub.commit);
    expect(manifest.files.map((f) => f.path)).to.deep.equal(listedFiles());
    for (const file of manifest.files) {
      expect(file.sha256).to.equal(hub.file(file.path).sha256);
      expect(sha256(await installed(file.path))).to.equal(file.sha256);
    }
    expect(JSON.parse((await installed("manifest.json")).toString()).resolved_commit).to.equal(hub.commit);
    const { model } = await call(t.client, "getModel", { name: "minilm" });
    expect(model).to.include({ status: ModelStatus.MODEL_STATUS_INSTALLED, resolvedCommit: hub.commit });
    // every download names the pinned commit, never the branch
    const downloads = hub.requests.filter((r) => r.origin === "hub" && r.path.includes("/resolve/"));
    expect(downloads.length).to.be.above(0);
    for (const r of downloads) expect(r.path).to.include(`/resolve/${hub.commit}/`);
    // the listing came in pages
    expect(hub.requests.filter((r) => r.path.includes("/tree/")).length).to.be.above(2);
    expect(await readdir(join(t.cacheRoot, ".blobs", "partial"))).to.deep.equal([]);
  });

  it("applies include and exclude filters before downloading anything", async () => {
    await call(t.client, "updateModel", { name: "minilm", model: modelSpec({ source: REPO, include: ["*.json", "*.safetensors", "onnx/"], exclude: ["onnx/*", "tokenizer*"] }) });
    const events = await pullOk(t.client, { name: "minilm" });
    expect(events.at(-1)!.completed!.manifest!.files.map((f) => f.path)).to.deep.equal(["1_Pooling/config.json", "config.json", "model.safetensors"]);
    expect(hub.contentRequests("onnx/model.onnx")).to.deep.equal([]);
    expect(hub.contentRequests("pytorch_model.bin")).to.deep.equal([]);
    const { model } = await call(t.client, "getModel", { name: "minilm" });
    expect(model!.include).to.deep.equal(["*.json", "*.safetensors", "onnx/"]);
    expect(model!.exclude).to.deep.equal(["onnx/*", "tokenizer*"]);
  });

  it("refuses with FAILED_PRECONDITION naming the filters when nothing is left", async () => {
    await call(t.client, "updateModel", { name: "minilm", model: modelSpec({ source: REPO, include: ["*.gguf"] }) });
    const outcome = await pull(t.client, { name: "minilm" });
    expect(outcome.error?.code).to.equal(status.FAILED_PRECONDITION);
    expect(outcome.error?.details).to.include("*.gguf").and.include("filters");
  });

  it("resumes a file whose connection dropped midway from the last byte it received, fetching only the missing bytes", async () => {
    // mid-block: the bytes received after the last whole MiB written are kept too
    hub.faults.dropAfter.set("onnx/model.onnx", 3 * 1024 * 1024 + 320 * 1024);
    await pullOk(t.client, { name: "minilm" });
    const requests = hub.contentRequests("onnx/model.onnx").filter((r) => r.origin === "cdn");
    expect(requests).to.have.length(2);
    const resumedAt = Number(/^bytes=(\d+)-$/.exec(requests[1]!.range ?? "")?.[1]);
    expect(resumedAt).to.equal(requests[0]!.sent);
    expect(requests[1]!.sent).to.equal(BIG - resumedAt);
    expect(sha256(await installed("onnx/model.onnx"))).to.equal(hub.file("onnx/model.onnx").sha256);
  });

  it("starts a file over when the hub ignores Range", async () => {
    hub.faults.dropAfter.set("onnx/model.onnx", 3 * 1024 * 1024);
    hub.faults.ignoreRange = true;
    await pullOk(t.client, { name: "minilm" });
    expect(sha256(await installed("onnx/model.onnx"))).to.equal(hub.file("onnx/model.onnx").sha256);
  });

  it("retries a 500 and goes on", async () => {
    hub.faults.fail500 = 2;
    await pullOk(t.client, { name: "minilm" });
    expect(hub.requests.filter((r) => r.status === 500)).to.have.length(2);
    expect((await call(t.client, "inspectCache", { name: "minilm", deep: true })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
  });

  it("waits as long as a 429's Retry-After says before retrying", async () => {
    hub.faults.retryAfter = 1;
    await pullOk(t.client, { name: "minilm" });
    const limited = hub.requests.findIndex((r) => r.status === 429);
    const next = hub.requests.slice(limited + 1).find((r) => r.path === hub.requests[limited]!.path)!;
    expect(next.at - hub.requests[limited]!.at).to.be.at.least(950);
  });

  it("fails with DATA_LOSS naming the file and both digests when the bytes are wrong, installing nothing", async () => {
    hub.faults.wrongBytes.add("config.json");
    const outcome = await pull(t.client, { name: "minilm" });
    expect(outcome.error?.code).to.equal(status.DATA_LOSS);
    expect(outcome.error?.details).to.include("config.json").and.include(hub.file("config.json").blobId);
    expect(await readdir(t.cacheRoot)).to.not.include("minilm");
    expect((await call(t.client, "getModel", { name: "minilm" })).model!.status).to.equal(ModelStatus.MODEL_STATUS_REGISTERED);
  });

  it("checks LFS files against the hub's sha256", async () => {
    hub.faults.wrongBytes.add("model.safetensors");
    const outcome = await pull(t.client, { name: "minilm" });
    expect(outcome.error?.code).to.equal(status.DATA_LOSS);
    expect(outcome.error?.details).to.include("model.safetensors").and.include(hub.file("model.safetensors").sha256);
  });

  it("resumes after a cancelled pull, and after a server restart, from the bytes on disk", async () => {
    hub.faults.bytesPerSecond = 16 * 1024 * 1024;
    const first = await pull(t.client, { name: "minilm" }, {
      onEvent: (event, stream) => {
        if (event.fileProgress?.path === "onnx/model.onnx" && event.fileProgress.bytesDone > 1024 * 1024) stream.cancel();
      },
    });
    expect(first.error?.code).to.equal(status.CANCELLED);
    await t.server.runtime.pulls.find("minilm")?.done;
    const partial = join(t.cacheRoot, ".blobs", "partial", "minilm", hub.commit, "onnx", "model.onnx");
    const kept = (await stat(partial)).size;
    expect(kept).to.be.above(0).and.below(BIG);
    await t.restart();
    expect((await stat(partial)).size).to.equal(kept);
    hub.faults.bytesPerSecond = undefined;
    const before = hub.sent("onnx/model.onnx");
    await pullOk(t.client, { name: "minilm" });
    expect(hub.sent("onnx/model.onnx") - before).to.equal(BIG - kept);
    expect(sha256(await installed("onnx/model.onnx"))).to.equal(hub.file("onnx/model.onnx").sha256);
  });

  /** Cancels a pull once part of onnx/model.onnx is on disk; returns the partial's path and size. */
  const leavePartial = async (): Promise<{ partial: string; kept: number }> => {
    hub.faults.bytesPerSecond = 16 * 1024 * 1024;
    const first = await pull(t.client, { name: "minilm" }, {
      onEvent: (event, stream) => {
        if (event.fileProgress?.path === "onnx/model.onnx" && event.fileProgress.bytesDone > 1024 * 1024) stream.cancel();
      },
    });
    expect(first.error?.code).to.equal(status.CANCELLED);
    await t.server.runtime.pulls.find("minilm")?.done;
    hub.faults.bytesPerSecond = undefined;
    const partial = join(t.cacheRoot, ".blobs", "partial", "minilm", hub.commit, "onnx", "model.onnx");
    return { partial, kept: (await stat(partial)).size };
  };

  it("resumes a download an earlier version kept in .partial/, moved into the store's area at startup", async () => {
    const { partial, kept } = await leavePartial();
    // no pull is running: the layout an earlier version left, then its restart
    const legacy = join(t.cacheRoot, ".partial");
    await rename(join(t.cacheRoot, ".blobs", "partial"), legacy);
    await t.restart();
    expect((await stat(partial)).size).to.equal(kept);
    await stat(legacy).then(
      () => expect.fail(".partial/ is still there"),
      () => undefined,
    );
    const before = hub.sent("onnx/model.onnx");
    await pullOk(t.client, { name: "minilm" });
    expect(hub.sent("onnx/model.onnx") - before).to.equal(BIG - kept);
  });

  it("starts a resumed file over from zero, once, when the bytes kept on disk do not verify", async () => {
    const { partial, kept } = await leavePartial();
    // what a crash before the bytes reached the disk can leave: the right length, the wrong bytes
    const handle = await open(partial, "r+");
    await handle.write(Buffer.from([0xde, 0xad]), 0, 2, 100);
    await handle.close();
    const before = hub.sent("onnx/model.onnx");
    await pullOk(t.client, { name: "minilm" });
    expect(hub.sent("onnx/model.onnx") - before, "the missing bytes, then the whole file again").to.equal(BIG - kept + BIG);
    expect(sha256(await installed("onnx/model.onnx"))).to.equal(hub.file("onnx/model.onnx").sha256);
  });

  it("reports DATA_LOSS when a resumed file still does not verify after starting over from zero", async () => {
    const { kept } = await leavePartial();
    hub.faults.wrongBytes.add("onnx/model.onnx");
    const before = hub.sent("onnx/model.onnx");
    const outcome = await pull(t.client, { name: "minilm" });
    expect(outcome.error?.code).to.equal(status.DATA_LOSS);
    expect(outcome.error?.details).to.include("onnx/model.onnx").and.include(hub.file("onnx/model.onnx").sha256);
    expect(hub.sent("onnx/model.onnx") - before, "one restart from zero, no more").to.equal(BIG - kept + BIG);
    expect(await readdir(t.cacheRoot)).to.not.include("minilm");
  });

  it("caps the download rate at --max-bytes-per-second", async () => {
    const limit = 4 * 1024 * 1024;
    await t.restart({ maxBytesPerSecond: limit });
    const started = performance.now();
    await pullOk(t.client, { name: "minilm" });
    const seconds = (performance.now() - started) / 1000;
    const total = hub.files.filter((f) => listedFiles().includes(f.path)).reduce((sum, f) => sum + f.bytes.length, 0);
    const first = hub.requests.find((r) => r.path.includes("/resolve/") || r.origin === "cdn")!;
    const hubSeconds = (performance.now() - first.at) / 1000;
    expect(total / hubSeconds, "bytes per second seen by the hub").to.be.below(limit * 1.25);
    expect(seconds).to.be.at.least(hubSeconds);
  });

  it("reuses installed files proven identical instead of downloading them again", async () => {
    await pullOk(t.client, { name: "minilm" });
    const before = hub.sent("onnx/model.onnx");
    await pullOk(t.client, { name: "minilm" });
    expect(hub.sent("onnx/model.onnx")).to.equal(before);
    await pullOk(t.client, { name: "minilm", force: true });
    expect(hub.sent("onnx/model.onnx")).to.equal(before + BIG);
  });

  it("with force fetches every byte again but writes none the hub still serves: the stored copy stays as it was, compared and hashed, and is linked again", async function () {
    this.timeout(20_000);
    await pullOk(t.client, { name: "minilm" });
    const blob = stored("onnx/model.onnx");
    const storedBefore = await stat(blob);
    const before = hub.sent("onnx/model.onnx");
    const events = await pullOk(t.client, { name: "minilm", force: true });
    expect(hub.sent("onnx/model.onnx"), "every byte fetched again").to.equal(before + BIG);
    const storedAfter = await stat(blob);
    expect(storedAfter.ino, "the stored copy was not replaced").to.equal(storedBefore.ino);
    expect(storedAfter.mtimeMs, "nor written").to.equal(storedBefore.mtimeMs);
    expect((await stat(join(t.cacheRoot, "minilm", "onnx/model.onnx"))).ino, "the new install links it").to.equal(storedBefore.ino);
    const done = events.find((e) => e.fileCompleted?.path === "onnx/model.onnx")!.fileCompleted!;
    expect(done.reused, "fetched, so not reused").to.equal(false);
    const progress = events.filter((e) => e.fileProgress?.path === "onnx/model.onnx").map((e) => e.fileProgress!.bytesDone);
    expect(Math.max(...progress)).to.be.at.most(BIG).and.above(0);
    expect(await readdir(join(t.cacheRoot, ".blobs", "partial"))).to.deep.equal([]);
    expect((await call(t.client, "inspectCache", { name: "minilm", deep: true })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
  });

  it("with force finds a stored copy only its own install holds rotten while it compares the hub's bytes with it: counted corrupt, and the download takes its place", async function () {
    this.timeout(20_000);
    await t.restart({ metricsListen: "127.0.0.1:0" });
    const corruptFound = async () => {
      const text = await (await fetch(`http://${t.server.metricsAddress}/metrics`)).text();
      return Number(/^modelcache_corrupt_files_total (\S+)$/m.exec(text)?.[1] ?? 0);
    };
    await pullOk(t.client, { name: "minilm" });
    const blob = stored("onnx/model.onnx");
    const storedBefore = (await call(t.client, "describeCache", {})).storedBytes;
    // the stored copy rots in place, its size unchanged
    const handle = await open(blob, "r+");
    await handle.write(Buffer.from("rot"), 0, 3, 0);
    await handle.close();
    const events = await pullOk(t.client, { name: "minilm", force: true });
    expect(hub.sent("onnx/model.onnx")).to.be.at.least(2 * BIG);
    expect(await corruptFound()).to.equal(1);
    expect(await readFile(blob)).to.deep.equal(big);
    expect((await stat(blob)).nlink, "the store's name and the install's").to.equal(2);
    expect((await call(t.client, "describeCache", {})).storedBytes).to.equal(storedBefore);
    // the comparison's bytes and the download's are one file's progress, each byte counted once
    const progress = events.filter((e) => e.fileProgress?.path === "onnx/model.onnx").map((e) => e.fileProgress!.bytesDone);
    expect(Math.max(...progress)).to.be.at.most(BIG);
    expect(progress).to.deep.equal([...progress].sort((a, b) => a - b));
    const inspected = await call(t.client, "inspectCache", { name: "minilm", deep: true });
    expect(inspected.status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
  });

  it("with force, cancelled while it compares, leaves the install, the stored copy and the partial downloads as they were", async function () {
    this.timeout(20_000);
    await pullOk(t.client, { name: "minilm" });
    const blob = stored("onnx/model.onnx");
    const storedBefore = await stat(blob);
    hub.faults.bytesPerSecond = 4 * 1024 * 1024;
    const outcome = await pull(t.client, { name: "minilm", force: true }, {
      onEvent: (event, stream) => {
        if (event.fileProgress?.path === "onnx/model.onnx" && event.fileProgress.bytesDone >= 1024 * 1024) stream.cancel();
      },
    });
    expect(outcome.error?.code).to.equal(status.CANCELLED);
    await t.server.runtime.pulls.find("minilm")?.done;
    hub.faults.bytesPerSecond = undefined;
    const storedAfter = await stat(blob);
    expect([storedAfter.ino, storedAfter.mtimeMs]).to.deep.equal([storedBefore.ino, storedBefore.mtimeMs]);
    expect(await installed("onnx/model.onnx")).to.deep.equal(big);
    expect(await readdir(join(t.cacheRoot, ".blobs", "partial")), "a comparison leaves nothing to resume").to.deep.equal([]);
    expect((await call(t.client, "inspectCache", { name: "minilm", deep: true })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
    await pullOk(t.client, { name: "minilm", force: true });
    expect((await stat(blob)).ino).to.equal(storedBefore.ino);
  });

  it("with force, while it compares a file with its stored copy, lets another model's pull of the same content link it", async function () {
    this.timeout(20_000);
    await pullOk(t.client, { name: "minilm" });
    await call(t.client, "registerModel", { model: modelSpec({ name: "minilm-too", source: REPO, revision: "main" }) });
    let release!: () => void;
    hub.faults.hold.set("onnx/model.onnx", new Promise<void>((resolve) => (release = resolve)));
    let forcedDone = false;
    const forced = pullOk(t.client, { name: "minilm", force: true }).finally(() => (forcedDone = true));
    try {
      // the forced pull's comparison waits on the hub; the other pull needs no byte from it
      while (!hub.requests.some((r) => r.path.endsWith("onnx/model.onnx") && r.range !== undefined)) await new Promise((resolve) => setTimeout(resolve, 10));
      const events = await pullOk(t.client, { name: "minilm-too" });
      expect(events.find((e) => e.fileCompleted?.path === "onnx/model.onnx")!.fileCompleted!.reused).to.equal(true);
      expect(forcedDone, "the forced pull still compares").to.equal(false);
    } finally {
      release();
    }
    await forced;
    expect((await call(t.client, "inspectCache", { name: "minilm", deep: true })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
  });

  it("with force compares two files of the same content each once, and links both without downloading either again", async function () {
    this.timeout(20_000);
    hub.commitFile("onnx/copy.onnx", big);
    await pullOk(t.client, { name: "minilm" });
    const blob = stored("onnx/model.onnx");
    const storedBefore = await stat(blob);
    const seen = hub.requests.length;
    await pullOk(t.client, { name: "minilm", force: true });
    const gets = (path: string) => hub.requests.slice(seen).filter((r) => r.origin === "hub" && r.path.endsWith(`/resolve/${hub.commit}/${path}`)).length;
    expect([gets("onnx/model.onnx"), gets("onnx/copy.onnx")], "one comparison each, no download after it").to.deep.equal([1, 1]);
    expect((await stat(blob)).ino).to.equal(storedBefore.ino);
    for (const path of ["onnx/model.onnx", "onnx/copy.onnx"]) expect((await stat(join(t.cacheRoot, "minilm", path))).ino).to.equal(storedBefore.ino);
    expect((await call(t.client, "inspectCache", { name: "minilm", deep: true })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
  });

  it("with force fails DATA_LOSS when the hub now serves other bytes, and leaves the install and its stored copy as they were", async function () {
    this.timeout(20_000);
    await pullOk(t.client, { name: "minilm" });
    const blob = stored("onnx/model.onnx");
    const storedBefore = await stat(blob);
    // the last byte differs: the whole file is compared before the download starts over
    hub.faults.wrongBytes.add("onnx/model.onnx");
    const outcome = await pull(t.client, { name: "minilm", force: true });
    expect(outcome.error?.code).to.equal(status.DATA_LOSS);
    expect(outcome.error?.details).to.include("onnx/model.onnx");
    expect((await stat(blob)).ino).to.equal(storedBefore.ino);
    expect(await installed("onnx/model.onnx")).to.deep.equal(big);
    expect((await call(t.client, "inspectCache", { name: "minilm", deep: true })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
  });

  it("after SIGKILL just as a forced pull linked a stored copy that matched the hub's bytes, the restart keeps the install whole and the stored copy as it was, and pulls and forced pulls go on", async function () {
    this.timeout(30_000);
    await pullOk(t.client, { name: "minilm" });
    const before = await installed("onnx/model.onnx");
    const blob = stored("onnx/model.onnx");
    const storedBefore = await stat(blob);
    await t.server.close();
    const child = await spawnServer({ dataDir: t.dataDir, args: ["--hub-url", hub.url] });
    // another file of the pull is held: the install cannot be promoted before the kill
    let release!: () => void;
    hub.faults.hold.set("pytorch_model.bin", new Promise<void>((resolve) => (release = resolve)));
    try {
      // the file is completed once the new install links the stored copy
      let linked!: () => void;
      const completed = new Promise<void>((resolve) => (linked = resolve));
      const pulling = pull(child.client, { name: "minilm", force: true }, { onEvent: (event) => event.fileCompleted?.path === "onnx/model.onnx" && linked() });
      await completed;
      await child.kill();
      expect((await pulling).error, "the pull was cut by the kill").to.not.equal(undefined);
    } finally {
      release();
      await child.kill();
    }
    await t.restart();
    expect(await installed("onnx/model.onnx")).to.deep.equal(before);
    const storedAfter = await stat(blob);
    expect([storedAfter.ino, storedAfter.mtimeMs]).to.deep.equal([storedBefore.ino, storedBefore.mtimeMs]);
    expect((await call(t.client, "inspectCache", { name: "minilm", deep: true })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
    await pullOk(t.client, { name: "minilm" });
    await pullOk(t.client, { name: "minilm", force: true });
    expect(await installed("onnx/model.onnx")).to.deep.equal(big);
    expect((await call(t.client, "inspectCache", { name: "minilm", deep: true })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
  });

  it("hashes a stored copy another install shares again while a forced pull downloads the file, not after it", async function () {
    this.timeout(20_000);
    await pullOk(t.client, { name: "minilm" });
    // a second install of the same repository links the same stored content
    await call(t.client, "registerModel", { model: modelSpec({ name: "minilm-too", source: REPO, revision: "main" }) });
    await pullOk(t.client, { name: "minilm-too" });
    const blob = stored("onnx/model.onnx");
    // the stored copy rots in place, its size unchanged
    const handle = await open(blob, "r+");
    await handle.write(Buffer.from("rot"), 0, 3, 0);
    await handle.close();
    let release!: () => void;
    hub.faults.hold.set("onnx/model.onnx", new Promise<void>((resolve) => (release = resolve)));
    const pulling = pullOk(t.client, { name: "minilm", force: true });
    try {
      // found rotten and condemned (moved out of the store) while the hub still holds the file back
      const until = Date.now() + 10_000;
      while ((await stat(blob).catch(() => undefined)) !== undefined) {
        expect(Date.now(), "the stored copy was not checked while the download waited").to.be.below(until);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      expect(hub.sent("onnx/model.onnx")).to.equal(BIG);
    } finally {
      release();
    }
    await pulling;
    expect(await readFile(blob)).to.deep.equal(big);
    const inspected = await call(t.client, "inspectCache", { name: "minilm", deep: true });
    expect(inspected.status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
  });

  it("ends a pull cancelled while its requests wait for a connection another pull's transfers hold, without waiting for them", async function () {
    this.timeout(20_000);
    // twenty files a pull fetches at once: sixteen take every connection to the hub, the rest wait
    const shards = Array.from({ length: 20 }, (_, i) => `shards/shard-${String(i).padStart(2, "0")}.json`);
    for (const path of shards) hub.commitFile(path, `{"shard": "${path}"}`);
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    for (const path of shards) hub.faults.hold.set(path, held);
    const logs = captureLogs();
    await t.restart({ fileConcurrency: 32, logger: logs.logger });
    await call(t.client, "registerModel", { model: modelSpec({ name: "minilm-too", source: REPO, revision: "main" }) });
    try {
      const first = pull(t.client, { name: "minilm" });
      const asked = () => hub.requests.filter((r) => r.path.includes("/shards/")).length;
      while (asked() < 16) await new Promise((resolve) => setTimeout(resolve, 10));
      const seen = hub.requests.length;
      const stream = t.client.pull({ name: "minilm-too", fixtureDir: "", credentialAlias: "", force: false, detach: false });
      const ended = new Promise<{ code?: number }>((resolve) => {
        stream.on("data", () => undefined);
        stream.on("error", resolve);
        stream.on("end", () => resolve({}));
      });
      // the second pull's first request (its revision's commit) meanwhile waits for a connection
      await new Promise((resolve) => setTimeout(resolve, 300));
      stream.cancel();
      expect((await ended).code).to.equal(status.CANCELLED);
      // the server ends the call now, not once a connection frees
      const line = await logs.seen((l) => l.msg === "rpc" && l.method === "Pull" && l.model === "minilm-too");
      expect(line.code).to.equal("CANCELLED");
      expect(hub.requests.length, "the second pull sent nothing").to.equal(seen);
      expect(asked(), "the first pull's transfers are still held").to.equal(16);
      release();
      expect((await first).error).to.equal(undefined);
    } finally {
      release();
    }
  });

  it("pulls many files at once without Node's listener-leak warning: each file's requests listen to the pull's signal", async function () {
    this.timeout(20_000);
    for (let i = 0; i < 24; i++) hub.commitFile(`shards/shard-${String(i).padStart(2, "0")}.json`, `{"shard": ${i}}`);
    // every file's transfer in flight at once, each held until all have asked
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    for (let i = 0; i < 24; i++) hub.faults.hold.set(`shards/shard-${String(i).padStart(2, "0")}.json`, held);
    await t.restart({ fileConcurrency: 16 });
    const warnings: Error[] = [];
    const warned = (warning: Error) => warnings.push(warning);
    process.on("warning", warned);
    try {
      const pulling = pull(t.client, { name: "minilm" });
      while (hub.requests.filter((r) => r.path.includes("/shards/")).length < 16) await new Promise((resolve) => setTimeout(resolve, 10));
      release();
      expect((await pulling).error).to.equal(undefined);
    } finally {
      release();
      process.off("warning", warned);
    }
    expect(warnings.map((w) => w.name)).to.not.include("MaxListenersExceededWarning");
  });

  describe("offline", () => {
    it("re-pulls a healthy install of a pinned commit without touching the network", async () => {
      await call(t.client, "updateModel", { name: "minilm", model: modelSpec({ source: REPO, revision: hub.commit }) });
      await pullOk(t.client, { name: "minilm" });
      await t.restart({ offline: true });
      const seen = hub.requests.length;
      const events = await pullOk(t.client, { name: "minilm" });
      expect(hub.requests.length).to.equal(seen);
      expect(events[0]!.started!.source).to.equal(`hub:${REPO}@${hub.commit}`);
      expect(events.at(-1)!.completed!.manifest!.resolvedCommit).to.equal(hub.commit);
    });

    it("refuses a pull that needs the network with FAILED_PRECONDITION saying so", async () => {
      await t.restart({ offline: true });
      const outcome = await pull(t.client, { name: "minilm" });
      expect(outcome.error?.code).to.equal(status.FAILED_PRECONDITION);
      expect(outcome.error?.details).to.include("offline");
      expect(hub.requests).to.deep.equal([]);
    });
  });

  describe("a private repo", () => {
    beforeEach(() => {
      hub.faults.token = "hf_secret_token";
    });

    it("without a credential is UNAUTHENTICATED, pointing at PutSecret", async () => {
      const outcome = await pull(t.client, { name: "minilm" });
      expect(outcome.error?.code).to.equal(status.UNAUTHENTICATED);
      expect(outcome.error?.details).to.include("PutSecret");
    });

    it("with the wrong secret is PERMISSION_DENIED naming the alias, never the token", async () => {
      await call(t.client, "putSecret", { alias: "hf", value: "hf_wrong_token" });
      const outcome = await pull(t.client, { name: "minilm", credentialAlias: "hf" });
      expect(outcome.error?.code).to.equal(status.PERMISSION_DENIED);
      expect(outcome.error?.details).to.include("'hf'").and.include("PutSecret").and.not.include("hf_wrong_token");
    });

    it("with the stored secret pulls, sending the token to the hub's origin only", async () => {
      await call(t.client, "putSecret", { alias: "hf", value: "hf_secret_token" });
      await call(t.client, "updateModel", { name: "minilm", model: modelSpec({ source: REPO, credentialAlias: "hf" }) });
      const events = await pullOk(t.client, { name: "minilm" });
      expect(JSON.stringify(events)).to.not.include("hf_secret_token");
      const hubSide = hub.requests.filter((r) => r.origin === "hub");
      const cdnSide = hub.requests.filter((r) => r.origin === "cdn");
      expect(cdnSide.length).to.be.above(0);
      for (const r of hubSide) expect(r.authorization).to.equal("Bearer hf_secret_token");
      for (const r of cdnSide) expect(r.authorization).to.equal(undefined);
    });
  });

  it("sends no token for a public repo pulled without an alias", async () => {
    await pullOk(t.client, { name: "minilm" });
    for (const r of hub.requests) expect(r.authorization).to.equal(undefined);
  });

  it("says NOT_FOUND for a revision the hub does not have", async () => {
    await call(t.client, "updateModel", { name: "minilm", model: modelSpec({ source: REPO, revision: "v9" }) });
    const outcome = await pull(t.client, { name: "minilm" });
    expect(outcome.error?.code).to.equal(status.NOT_FOUND);
    expect(outcome.error?.details).to.include("v9");
  });

  it("drops resumable downloads on DropCache", async () => {
    hub.faults.wrongBytes.add("tokenizer.json");
    hub.faults.dropAfter.set("onnx/model.onnx", 1024 * 1024);
    await pull(t.client, { name: "minilm" });
    await call(t.client, "dropCache", { name: "minilm", force: false });
    expect(await readdir(join(t.cacheRoot, ".blobs", "partial"))).to.deep.equal([]);
  });

  it("never lets plaintext credentials in, even for hub pulls", async () => {
    const metadata = new Metadata();
    metadata.set("hf-token", "hf_x");
    const outcome = await pull(t.client, { name: "minilm" }, { metadata });
    expect(outcome.error?.code).to.equal(status.INVALID_ARGUMENT);
    expect(hub.requests).to.deep.equal([]);
    expect(outcome.events.map(kindOf)).to.deep.equal([]);
  });
});

describe("pulling a large file from a hub in parallel byte ranges", () => {
  let hub: FakeHub;
  let t: TestServer;
  const RANGED = 12 * 1024 * 1024;
  const file = Buffer.alloc(RANGED);
  for (let i = 0; i < RANGED; i += 4) file.writeUInt32LE((i * 2246822519) >>> 0, i);
  beforeEach(async () => {
    hub = await FakeHub.serve(REPO, FIXTURE_DIR, { "weights/model.safetensors": file });
    t = await startTestServer({ hubUrl: hub.url, progressIntervalMs: 0, parallelRangeMinBytes: 4 * 1024 * 1024, parallelRangeBelowBytesPerSecond: Infinity });
    await call(t.client, "registerModel", { model: modelSpec({ source: REPO, include: ["weights/"] }) });
  });
  afterEach(async () => {
    await t.close();
    await hub.close();
  });
  const ranges = () => hub.contentRequests("weights/model.safetensors").filter((r) => r.origin === "cdn");

  it("fetches the file as several ranges at once, and installs it verified", async () => {
    await pullOk(t.client, { name: "minilm" });
    const starts = ranges().map((r) => Number(/^bytes=(\d+)-\d+$/.exec(r.range ?? "")?.[1]));
    expect(starts.sort((a, b) => a - b)).to.deep.equal([0, 3, 6, 9].map((m) => m * 1024 * 1024));
    expect(hub.sent("weights/model.safetensors")).to.equal(RANGED);
    expect(sha256(await readFile(join(t.cacheRoot, "minilm", "weights/model.safetensors")))).to.equal(hub.file("weights/model.safetensors").sha256);
  });

  /** The ranges asked for the large file, by their first byte, in the order they were asked. */
  const starts = () => ranges().map((r) => Number(/^bytes=(\d+)-\d+$/.exec(r.range ?? "")?.[1]));

  it("fetches a lone file over its own connection alone, range after range, while that connection is faster than --parallel-range-below-bytes-per-second", async () => {
    await t.restart({ hubUrl: hub.url, progressIntervalMs: 0, parallelRangeMinBytes: 4 * 1024 * 1024, parallelRangeBelowBytesPerSecond: 1 });
    await pullOk(t.client, { name: "minilm" });
    expect(hub.peakContentStreams, "content requests in flight at once").to.equal(1);
    expect(starts(), "one range after the other, in order").to.deep.equal([0, 3, 6, 9].map((m) => m * 1024 * 1024));
    expect(hub.sent("weights/model.safetensors")).to.equal(RANGED);
    expect(sha256(await readFile(join(t.cacheRoot, "minilm", "weights/model.safetensors")))).to.equal(hub.file("weights/model.safetensors").sha256);
  });

  it("lets the idle connections join once the file's own connection brings it slower than --parallel-range-below-bytes-per-second", async () => {
    await t.restart({ hubUrl: hub.url, progressIntervalMs: 0, parallelRangeMinBytes: 4 * 1024 * 1024, parallelRangeBelowBytesPerSecond: 64 * 1024 * 1024 });
    // 4 MiB/s a stream: the first range alone takes 0.75 s; a window opens with its first bytes and judges the rate 0.25 s later
    hub.faults.bytesPerSecond = 4 * 1024 * 1024;
    await pullOk(t.client, { name: "minilm" });
    expect(hub.peakContentStreams, "the three other ranges fetched beside the first, still under way").to.equal(4);
    expect(starts().sort((a, b) => a - b)).to.deep.equal([0, 3, 6, 9].map((m) => m * 1024 * 1024));
    expect(hub.sent("weights/model.safetensors")).to.equal(RANGED);
    expect(sha256(await readFile(join(t.cacheRoot, "minilm", "weights/model.safetensors")))).to.equal(hub.file("weights/model.safetensors").sha256);
  });

  it("never lets other connections join with --parallel-range-below-bytes-per-second 0, however slow the file's own", async () => {
    await t.restart({ hubUrl: hub.url, progressIntervalMs: 0, parallelRangeMinBytes: 4 * 1024 * 1024, parallelRangeBelowBytesPerSecond: 0 });
    hub.faults.bytesPerSecond = 16 * 1024 * 1024;
    await pullOk(t.client, { name: "minilm" });
    expect(hub.peakContentStreams, "content requests in flight at once").to.equal(1);
    expect(starts()).to.deep.equal([0, 3, 6, 9].map((m) => m * 1024 * 1024));
    expect(sha256(await readFile(join(t.cacheRoot, "minilm", "weights/model.safetensors")))).to.equal(hub.file("weights/model.safetensors").sha256);
  });

  it("resumes a range whose connection dropped midway from the last byte it received", async () => {
    hub.faults.dropAfter.set("weights/model.safetensors", 1024 * 1024 + 320 * 1024);
    await pullOk(t.client, { name: "minilm" });
    const [dropped, ...others] = ranges();
    const [start, end] = (/^bytes=(\d+)-(\d+)$/.exec(dropped!.range ?? "") ?? []).slice(1).map(Number);
    expect(dropped!.sent).to.equal(1024 * 1024 + 320 * 1024);
    const retry = others.filter((r) => r.range === `bytes=${start! + dropped!.sent}-${end}`);
    expect(retry, `a retry from the byte after the ${dropped!.sent} received`).to.have.length(1);
    expect(hub.sent("weights/model.safetensors")).to.equal(RANGED);
    expect(sha256(await readFile(join(t.cacheRoot, "minilm", "weights/model.safetensors")))).to.equal(hub.file("weights/model.safetensors").sha256);
  });

  it("resumes every range where it stopped, after a cancel and a restart", async () => {
    hub.faults.bytesPerSecond = 8 * 1024 * 1024;
    const first = await pull(t.client, { name: "minilm" }, {
      onEvent: (event, stream) => {
        if ((event.fileProgress?.bytesDone ?? 0) > 2 * 1024 * 1024) stream.cancel();
      },
    });
    expect(first.error?.code).to.equal(status.CANCELLED);
    await t.server.runtime.pulls.find("minilm")?.done;
    await t.restart();
    hub.faults.bytesPerSecond = undefined;
    const before = hub.sent("weights/model.safetensors");
    await pullOk(t.client, { name: "minilm" });
    const resumed = hub.sent("weights/model.safetensors") - before;
    expect(resumed).to.be.below(RANGED);
    expect(sha256(await readFile(join(t.cacheRoot, "minilm", "weights/model.safetensors")))).to.equal(hub.file("weights/model.safetensors").sha256);
    expect(await readdir(join(t.cacheRoot, ".blobs", "partial"))).to.deep.equal([]);
  });

  it("does not split files that download side by side: no more connections than one per file in flight", async () => {
    const shards = Object.fromEntries([1, 2, 3, 4].map((i) => [`shards/model-${i}.safetensors`, Buffer.concat([file.subarray(i), file.subarray(0, i)])]));
    await hub.close();
    hub = await FakeHub.serve(REPO, FIXTURE_DIR, shards);
    await t.restart({ hubUrl: hub.url, parallelRangeMinBytes: 4 * 1024 * 1024, parallelRangeBelowBytesPerSecond: Infinity });
    await call(t.client, "updateModel", { name: "minilm", model: modelSpec({ source: REPO, include: ["shards/"] }) });
    // slow enough that streams overlap whenever the server opens them together
    hub.faults.bytesPerSecond = 32 * 1024 * 1024;
    await pullOk(t.client, { name: "minilm" });
    expect(hub.peakContentStreams, "content requests in flight at once").to.be.at.most(4);
    for (const path of Object.keys(shards)) {
      expect(sha256(await readFile(join(t.cacheRoot, "minilm", path)))).to.equal(hub.file(path).sha256);
    }
  });

  it("fetches small files beside the large ones: a config listed last is installed while every large file's transfer is held", async () => {
    const shards = Object.fromEntries([1, 2, 3, 4].map((i) => [`shards/model-${i}.safetensors`, Buffer.concat([file.subarray(i), file.subarray(0, i)])]));
    await hub.close();
    hub = await FakeHub.serve(REPO, FIXTURE_DIR, { ...shards, "shards/zz-config.json": '{"hidden_size": 384}' });
    await t.restart({ hubUrl: hub.url });
    await call(t.client, "updateModel", { name: "minilm", model: modelSpec({ source: REPO, include: ["shards/"] }) });
    // every large file's response waits: as many as the pull fetches large files at once
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    for (const path of Object.keys(shards)) hub.faults.hold.set(path, held);
    const completed: string[] = [];
    let configDone!: () => void;
    const config = new Promise<void>((resolve) => (configDone = resolve));
    const pulling = pull(t.client, { name: "minilm" }, {
      onEvent: (event) => {
        const path = event.fileCompleted?.path;
        if (path) completed.push(path);
        if (path === "shards/zz-config.json") configDone();
      },
    });
    // the large files are let go once the config is in, or after a while if it never comes
    await Promise.race([config, new Promise((resolve) => setTimeout(resolve, 3000))]);
    release();
    expect((await pulling).error).to.equal(undefined);
    expect(completed[0], "the first file completed").to.equal("shards/zz-config.json");
    expect(completed).to.have.length(5);
  });

  /**
   * Cancels a pull once part of the file is on disk; returns the partial's path, the bytes its
   * resume state counts, and an offset inside a range the state says is kept.
   */
  const leaveRanges = async (): Promise<{ partial: string; kept: number; keptOffset: number }> => {
    hub.faults.bytesPerSecond = 8 * 1024 * 1024;
    const first = await pull(t.client, { name: "minilm" }, {
      onEvent: (event, stream) => {
        if ((event.fileProgress?.bytesDone ?? 0) > 2 * 1024 * 1024) stream.cancel();
      },
    });
    expect(first.error?.code).to.equal(status.CANCELLED);
    await t.server.runtime.pulls.find("minilm")?.done;
    hub.faults.bytesPerSecond = undefined;
    const partial = join(t.cacheRoot, ".blobs", "partial", "minilm", hub.commit, "weights", "model.safetensors");
    const state = JSON.parse(await readFile(`${partial}.segments.json`, "utf8")) as { segments: { start: number; done: number }[] };
    const kept = state.segments.reduce((sum, s) => sum + s.done, 0);
    expect(kept).to.be.above(0).and.below(RANGED);
    // which ranges were synced when the pull was cancelled depends on timing: corrupt one that was
    const keptOffset = state.segments.find((s) => s.done > 0)!.start;
    return { partial, kept, keptOffset };
  };

  it("starts a resumed file over from zero, once, when the ranges kept on disk do not verify", async () => {
    const { partial, kept, keptOffset } = await leaveRanges();
    const handle = await open(partial, "r+");
    await handle.write(Buffer.from([0xde, 0xad]), 0, 2, keptOffset);
    await handle.close();
    const before = hub.sent("weights/model.safetensors");
    await pullOk(t.client, { name: "minilm" });
    expect(hub.sent("weights/model.safetensors") - before, "the missing ranges, then the whole file again").to.equal(RANGED - kept + RANGED);
    expect(sha256(await readFile(join(t.cacheRoot, "minilm", "weights/model.safetensors")))).to.equal(hub.file("weights/model.safetensors").sha256);
  });

  it("reports DATA_LOSS when a resumed file in ranges still does not verify after starting over from zero", async () => {
    const { kept } = await leaveRanges();
    hub.faults.wrongBytes.add("weights/model.safetensors");
    const before = hub.sent("weights/model.safetensors");
    const outcome = await pull(t.client, { name: "minilm" });
    expect(outcome.error?.code).to.equal(status.DATA_LOSS);
    expect(hub.sent("weights/model.safetensors") - before, "one restart from zero, no more").to.equal(RANGED - kept + RANGED);
  });

  it("falls back to one stream when the hub ignores Range", async () => {
    hub.faults.ignoreRange = true;
    await pullOk(t.client, { name: "minilm" });
    expect(sha256(await readFile(join(t.cacheRoot, "minilm", "weights/model.safetensors")))).to.equal(hub.file("weights/model.safetensors").sha256);
  });

  // the HTTP client allocates every socket read apart (outside V8's heap); left to V8, some 32 MB of them pile up before a collection
  for (const [how, ignoreRange] of [
    ["in parallel ranges", false],
    ["as one stream", true],
  ] as const) {
    it(`holds a few MiB of received bytes at a time, not tens, while it downloads a large file ${how}`, async () => {
      const LARGE = 64 * 1024 * 1024;
      await hub.close();
      hub = await FakeHub.serve(REPO, FIXTURE_DIR, { "weights/model.safetensors": patternedBytes(LARGE) });
      hub.chunkBytes = 1024 * 1024;
      hub.faults.ignoreRange = ignoreRange;
      await t.restart({ hubUrl: hub.url, parallelRangeMinBytes: 4 * 1024 * 1024, parallelRangeBelowBytesPerSecond: Infinity });
      // read at every progress event: memory outside V8's heap, above what the process held before (the hub's copy of the file among it)
      const before = process.memoryUsage().arrayBuffers;
      let most = 0;
      const outcome = await pull(t.client, { name: "minilm" }, { onEvent: () => (most = Math.max(most, process.memoryUsage().arrayBuffers - before)) });
      expect(outcome.error).to.equal(undefined);
      expect(sha256(await readFile(join(t.cacheRoot, "minilm", "weights/model.safetensors")))).to.equal(hub.file("weights/model.safetensors").sha256);
      expect(most / 1024 / 1024, "MiB of array buffers above the start").to.be.below(16);
    });
  }

  it("fails with DATA_LOSS when the assembled file does not hash to the hub's sha256", async () => {
    hub.faults.wrongBytes.add("weights/model.safetensors");
    const outcome = await pull(t.client, { name: "minilm" });
    expect(outcome.error?.code).to.equal(status.DATA_LOSS);
    expect(outcome.error?.details).to.include("weights/model.safetensors");
  });
});
