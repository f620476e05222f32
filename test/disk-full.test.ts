// A full disk, for real: a 96 MiB ext4 image, loop-mounted as the data dir
// and filled by a ballast file at the moment each test chooses.
import { mkdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { type ServiceError, status } from "@grpc/grpc-js";
import { expect } from "chai";
import { CacheStatus, PullPolicy } from "../generated/modelcache/v1/model_cache.js";
import { LEASE_JOURNAL_FILE, LeaseJournal } from "../src/consumers/lease-journal.js";
import { FakeHub } from "./support/fake-hub.js";
import { FakeS3, S3_CREDENTIALS } from "./support/fake-s3.js";
import { captureLogs } from "./support/log-capture.js";
import { type ChildServer, spawnServer } from "./support/child-server.js";
import { runCli } from "./support/run-cli.js";
import { type SmallDisk, smallDiskOrSkip } from "./support/small-disk.js";
import { makeSourceDir, patternedBytes, sha256, snapshot } from "./support/source-dir.js";
import { FIXTURE_DIR, type TestServer, call, callError, modelSpec, pull, pullOk, startTestServer } from "./support/test-server.js";

const REPO = "acme/tiny-minilm";
const BIG = 6 * 1024 * 1024;
const big = patternedBytes(BIG);

describe("a full disk", function () {
  this.timeout(120_000);
  let disk: SmallDisk;
  /** the disk still to unmount */
  let mounted: SmallDisk | undefined;
  let t: TestServer | undefined;
  beforeEach(async function () {
    disk = mounted = await smallDiskOrSkip(this);
  });
  afterEach(async () => {
    try {
      await t?.close();
    } finally {
      t = undefined;
      await mounted?.unmount();
      mounted = undefined;
    }
  });

  async function serverOnDisk(options: Parameters<typeof startTestServer>[0] = {}): Promise<TestServer> {
    const dataDir = join(disk.dir, "data");
    await mkdir(dataDir);
    // --min-free-bytes 0: the filesystem itself says when it is full
    return startTestServer({ dataDir, minFreeBytes: 0, ...options });
  }

  describe("a pull", () => {
    const cleanups: (() => Promise<void>)[] = [];
    afterEach(async () => {
      for (const cleanup of cleanups.splice(0)) await cleanup();
    });

    it("from a directory fails with RESOURCE_EXHAUSTED naming the path, and the previous install stays", async () => {
      t = await serverOnDisk();
      await call(t.client, "registerModel", { model: modelSpec() });
      await pullOk(t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
      const { model } = await call(t.client, "getModel", { name: "minilm" });
      const before = await snapshot(model!.cacheDir);
      // a few hundred bytes by their sizes, but a block each on the disk: the capacity check lets
      // the pull start, and the filesystem runs out while it copies
      const files: Record<string, string> = {};
      for (let i = 0; i < 3000; i++) files[`shards/part-${String(i).padStart(4, "0")}.txt`] = `${i}`;
      const source = await makeSourceDir(files);
      cleanups.push(source.cleanup);
      await disk.fill();
      await disk.release(512 * 1024);

      const outcome = await pull(t.client, { name: "minilm", fixtureDir: source.dir });
      expect(outcome.error?.code, outcome.error?.details).to.equal(status.RESOURCE_EXHAUSTED);
      expect(outcome.error!.details, outcome.error!.details).to.match(/no space left on device/);
      expect(outcome.error!.details).to.include(disk.dir);

      expect(await snapshot(model!.cacheDir)).to.deep.equal(before);
      const after = await call(t.client, "getModel", { name: "minilm" });
      expect(after.model!.status).to.equal(model!.status);
      const inspected = await call(t.client, "inspectCache", { name: "minilm", deep: true });
      expect(inspected.status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
    });

    /** A hub pull of one big file, slowed down, during which the disk fills up. */
    async function hubPullFillingTheDisk(options: Parameters<typeof startTestServer>[0]) {
      const hub = await FakeHub.serve(REPO, FIXTURE_DIR, { "onnx/model.onnx": big });
      cleanups.push(() => hub.close());
      t = await serverOnDisk({ hubUrl: hub.url, progressIntervalMs: 0, ...options });
      await call(t.client, "registerModel", { model: modelSpec({ source: REPO, revision: "main" }) });
      hub.faults.bytesPerSecond = 1024 * 1024;
      let filling: Promise<void> | undefined;
      const outcome = await pull(t.client, { name: "minilm" }, {
        onEvent: (event) => {
          // the disk fills up while the big file is on its way, once a first 1 MiB block of it was written
          // (received bytes are written a block at a time)
          if (event.fileProgress?.path === "onnx/model.onnx" && event.fileProgress.bytesDone > 1.5 * 1024 * 1024) filling ??= disk.fill();
        },
      });
      await filling;
      return { hub, outcome, server: t };
    }

    it("from a hub fails with RESOURCE_EXHAUSTED without asking again, and the retry resumes its partial", async () => {
      const { hub, outcome, server } = await hubPullFillingTheDisk({});
      expect(outcome.error?.code, outcome.error?.details).to.equal(status.RESOURCE_EXHAUSTED);
      expect(outcome.error!.details).to.match(/no space left on device/);
      const partial = join(disk.dir, "data", "ai_models_cache", ".blobs", "partial", "minilm", hub.commit, "onnx", "model.onnx");
      expect(outcome.error!.details).to.include(partial);
      // one request for the file: a full disk is no network error to retry
      const asked = () => hub.requests.filter((r) => r.origin === "cdn" && r.path.endsWith(hub.file("onnx/model.onnx").sha256));
      expect(asked(), JSON.stringify(hub.requests.map((r) => [r.origin, r.path, r.range, r.status]))).to.have.length(1);
      const kept = (await stat(partial)).size;
      expect(kept).to.be.above(0).and.below(BIG);

      await disk.release(32 * 1024 * 1024);
      hub.faults.bytesPerSecond = undefined;
      await pullOk(server.client, { name: "minilm" });
      expect(asked()).to.have.length(2);
      expect(asked()[1]!.range).to.equal(`bytes=${kept}-`);
      expect(asked()[1]!.sent).to.equal(BIG - kept);
      const { model } = await call(server.client, "getModel", { name: "minilm" });
      expect(sha256(await readFile(join(model!.cacheDir, "onnx", "model.onnx")))).to.equal(hub.file("onnx/model.onnx").sha256);
    });

    it("from a hub in parallel ranges fails with RESOURCE_EXHAUSTED without asking for any range again, and a pull once there is room installs it", async () => {
      const { hub, outcome, server } = await hubPullFillingTheDisk({ parallelRangeMinBytes: 1024 * 1024, parallelRangeBelowBytesPerSecond: Infinity });
      expect(outcome.error?.code, outcome.error?.details).to.equal(status.RESOURCE_EXHAUSTED);
      expect(outcome.error!.details).to.match(/no space left on device/);
      const ranges = hub.requests.filter((r) => r.origin === "cdn" && r.path.endsWith(hub.file("onnx/model.onnx").sha256)).map((r) => r.range);
      expect(new Set(ranges).size, ranges.join(", ")).to.equal(ranges.length);

      await disk.release(32 * 1024 * 1024);
      hub.faults.bytesPerSecond = undefined;
      await pullOk(server.client, { name: "minilm" });
      const { model } = await call(server.client, "getModel", { name: "minilm" });
      expect(sha256(await readFile(join(model!.cacheDir, "onnx", "model.onnx")))).to.equal(hub.file("onnx/model.onnx").sha256);
    });

    it("from an S3 store fails with RESOURCE_EXHAUSTED without asking for any object again, and a pull once there is room installs it", async () => {
      const s3 = await FakeS3.start(["models"]);
      cleanups.push(() => s3.close());
      await s3.put("models", { "minilm/config.json": '{"hidden_size": 384}', "minilm/onnx/model.onnx": big });
      t = await serverOnDisk({ offline: false, s3Endpoint: s3.url, progressIntervalMs: 0 });
      await call(t.client, "putSecret", { alias: "store", value: JSON.stringify(S3_CREDENTIALS) });
      await call(t.client, "registerModel", { model: modelSpec({ source: "s3://models/minilm", revision: "", credentialAlias: "store", include: ["onnx/"] }) });
      // the disk fills up just before the big object is fetched
      s3.faults.beforeGet.set("minilm/onnx/model.onnx", () => disk.fill());

      const outcome = await pull(t.client, { name: "minilm" });
      expect(outcome.error?.code, outcome.error?.details).to.equal(status.RESOURCE_EXHAUSTED);
      expect(outcome.error!.details).to.match(/no space left on device/);
      expect(outcome.error!.details).to.include(disk.dir);
      const gets = s3.requests.filter((r) => r.method === "GET" && r.key.startsWith("minilm/") && !r.query.includes("list-type"));
      const asked = gets.map((r) => `${r.key} ${r.range ?? ""}`);
      expect(new Set(asked).size, asked.join(", ")).to.equal(asked.length);

      await disk.release(32 * 1024 * 1024);
      await pullOk(t.client, { name: "minilm" });
      const { model } = await call(t.client, "getModel", { name: "minilm" });
      expect(sha256(await readFile(join(model!.cacheDir, "onnx", "model.onnx")))).to.equal(sha256(big));
    });
  });

  describe("the lease journal", () => {
    it("refuses a lease with RESOURCE_EXHAUSTED naming the journal, leaves no torn line, and keeps every acknowledged lease across a restart", async () => {
      t = await serverOnDisk();
      await call(t.client, "registerModel", { model: modelSpec() });
      await pullOk(t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
      const resolve = () => call(t!.client, "resolveModel", { name: "minilm", pullPolicy: PullPolicy.PULL_POLICY_IF_MISSING, leaseSeconds: 3600, credentialAlias: "" });
      const granted: string[] = [(await resolve()).leaseId];
      await disk.fill();
      // the journal's last block may take a few more lines: lease until a write fails
      let refusal: ServiceError | undefined;
      for (let i = 0; i < 5000 && !refusal; i++) {
        try {
          granted.push((await resolve()).leaseId);
        } catch (err) {
          refusal = err as ServiceError;
        }
      }
      expect(refusal, "a lease on the full disk failed").to.not.equal(undefined);
      expect(refusal!.code, refusal!.details).to.equal(status.RESOURCE_EXHAUSTED);
      expect(refusal!.details).to.include(join(disk.dir, "data", LEASE_JOURNAL_FILE)).and.match(/no space left on device; nothing was changed: free space/);
      // a release needs a line too (a shorter one, which the block may still take): once refused, its lease still holds
      let unreleased: ServiceError | undefined;
      while (!unreleased && granted.length > 1) {
        try {
          await call(t.client, "releaseLease", { leaseId: granted[0]! });
          granted.shift();
        } catch (err) {
          unreleased = err as ServiceError;
        }
      }
      expect(unreleased?.code, unreleased?.details).to.equal(status.RESOURCE_EXHAUSTED);
      expect((await call(t.client, "listLeases", { name: "minilm" })).leases.map((l) => l.leaseId)).to.include(granted[0]);
      // what the failed writes began was cut back: every line is whole
      expect((await new LeaseJournal(join(disk.dir, "data")).read()).skipped).to.equal(0);

      await disk.release(1024 * 1024);
      await call(t.client, "releaseLease", { leaseId: granted.shift()! });
      for (let i = 0; i < 20; i++) granted.push((await resolve()).leaseId);
      await t.restart();
      const listed = (await call(t.client, "listLeases", { name: "minilm" })).leases.map((l) => l.leaseId);
      expect([...listed].sort()).to.deep.equal([...granted].sort());
    });
  });

  describe("the registry", () => {
    it("keeps every acknowledged write across a restart after a write failed for lack of space", async () => {
      t = await serverOnDisk();
      const acknowledged: string[] = [];
      for (let i = 0; i < 3; i++) {
        await call(t.client, "registerModel", { model: modelSpec({ name: `before-${i}` }) });
        acknowledged.push(`before-${i}`);
      }
      await disk.fill();
      // the log's last block may take a few more records: write until LevelDB fails
      let refusal;
      for (let i = 0; i < 5000 && !refusal; i++) {
        try {
          await call(t.client, "registerModel", { model: modelSpec({ name: `full-${i}`, source: `org/model-${"x".repeat(80)}` }) });
          acknowledged.push(`full-${i}`);
        } catch (err) {
          refusal = err as { code: number; details: string };
        }
      }
      expect(refusal, "a registration on the full disk failed").to.not.equal(undefined);
      expect(refusal!.code, refusal!.details).to.equal(status.RESOURCE_EXHAUSTED);
      expect(refusal!.details).to.include(join(disk.dir, "data", "registry"));
      // still full: refused, not written after the torn record
      const again = await callError(t.client, "registerModel", { model: modelSpec({ name: "still-full" }) });
      expect(again.code).to.equal(status.RESOURCE_EXHAUSTED);
      expect(again.details).to.match(/free space/);

      await disk.release(16 * 1024 * 1024);
      for (let i = 0; i < 120; i++) {
        await call(t.client, "registerModel", { model: modelSpec({ name: `after-${i}` }) });
        acknowledged.push(`after-${i}`);
      }
      await call(t.client, "putSecret", { alias: "hf-after", value: "s3cr3t-after" });
      await call(t.client, "updateModel", { name: "before-0", model: modelSpec({ name: "before-0", dimensions: 768 }) });

      await t.restart();
      const { models } = await call(t.client, "listModels", {});
      const names = new Set(models.map((m) => m.name));
      const lost = acknowledged.filter((name) => !names.has(name));
      expect(lost, "acknowledged registrations missing after the restart").to.deep.equal([]);
      expect(names.has("still-full")).to.equal(false);
      const { model } = await call(t.client, "getModel", { name: "before-0" });
      expect(model!.dimensions).to.equal(768);
      expect(await t.server.runtime.registry.vault.get("hf-after")).to.equal("s3cr3t-after");
    });

    it("lets a DropCache it refuses still free the install's space, and the restart finds the model dropped", async () => {
      t = await serverOnDisk();
      const source = await makeSourceDir({ "config.json": "{}", "model.safetensors": big });
      try {
        await call(t.client, "registerModel", { model: modelSpec() });
        await pullOk(t.client, { name: "minilm", fixtureDir: source.dir });
        await disk.fill();
        // write until LevelDB fails: from then on it refuses writes until it has room to reopen
        let refused = false;
        for (let i = 0; i < 5000 && !refused; i++) {
          await call(t.client, "registerModel", { model: modelSpec({ name: `full-${i}`, source: `org/model-${"x".repeat(80)}` }) }).catch(() => (refused = true));
        }
        expect(refused, "a registration on the full disk failed").to.equal(true);
        // room for the model's lock, not for the registry to reopen
        await disk.release(256 * 1024);
        const freeBefore = await disk.freeBytes();
        const drop = await callError(t.client, "dropCache", { name: "minilm", force: false });
        expect(drop.code, drop.details).to.equal(status.RESOURCE_EXHAUSTED);
        // the install's files went all the same: the space a full disk needs most is back
        expect(await disk.freeBytes()).to.be.at.least(freeBefore + BIG);
        const inspected = await call(t.client, "inspectCache", { name: "minilm", deep: false });
        expect(inspected.status).to.equal(CacheStatus.CACHE_STATUS_MISSING);
        await t.restart();
        expect((await call(t.client, "inspectCache", { name: "minilm", deep: false })).status).to.equal(CacheStatus.CACHE_STATUS_MISSING);
      } finally {
        await source.cleanup();
      }
    });

    it("lets a DropCache on a disk without a free block take its lock from the reserve, free the install and renew the reserve", async () => {
      t = await serverOnDisk();
      const reserve = join(t.cacheRoot, ".locks", "reserve");
      expect((await stat(reserve)).size, "the reserve written at start").to.equal(1024 * 1024);
      const source = await makeSourceDir({ "config.json": "{}", "model.safetensors": big });
      try {
        await call(t.client, "registerModel", { model: modelSpec() });
        await pullOk(t.client, { name: "minilm", fixtureDir: source.dir });
        await disk.fill();
        expect(await disk.freeBytes()).to.equal(0);
        const { removed, freedBytes } = await call(t.client, "dropCache", { name: "minilm", force: false });
        expect(removed).to.equal(true);
        expect(Number(freedBytes)).to.be.at.least(BIG);
        expect((await call(t.client, "inspectCache", { name: "minilm", deep: false })).status).to.equal(CacheStatus.CACHE_STATUS_MISSING);
        // the space freed had room for a new reserve, for the next full disk
        expect((await stat(reserve)).size).to.equal(1024 * 1024);
        // as a server killed while it wrote a new reserve leaves it: the next start writes it whole
        await rm(reserve);
        await writeFile(`${reserve}.partial`, "cut short");
        await t.restart();
        expect((await stat(reserve)).size).to.equal(1024 * 1024);
        expect(await stat(`${reserve}.partial`).then(() => "there", (err: NodeJS.ErrnoException) => err.code)).to.equal("ENOENT");
        expect((await call(t.client, "inspectCache", { name: "minilm", deep: false })).status).to.equal(CacheStatus.CACHE_STATUS_MISSING);
      } finally {
        await source.cleanup();
      }
    });

    it("answers reads made while it reopens, and keeps every write made at the same time", async () => {
      t = await serverOnDisk();
      await call(t.client, "registerModel", { model: modelSpec({ name: "base" }) });
      await disk.fill();
      const acknowledged = ["base"];
      for (let i = 0; i < 5000; i++) {
        try {
          await call(t.client, "registerModel", { model: modelSpec({ name: `full-${i}` }) });
          acknowledged.push(`full-${i}`);
        } catch (err) {
          expect((err as { code: number }).code).to.equal(status.RESOURCE_EXHAUSTED);
          break;
        }
      }
      await disk.release(16 * 1024 * 1024);
      // the first of these writes reopens the registry while the reads run
      const writes = Array.from({ length: 100 }, (_, i) => call(t!.client, "registerModel", { model: modelSpec({ name: `at-once-${i}` }) }).then(() => acknowledged.push(`at-once-${i}`)));
      const reads = Array.from({ length: 100 }, (_, i) =>
        (i % 2 === 0 ? call(t!.client, "getModel", { name: "base" }) : call(t!.client, "listModels", {})).then(
          () => "ok",
          // a listing cannot wait for the reopen: it says so, and clients retry UNAVAILABLE
          (err: { code: number; details: string }) => (err.code === status.UNAVAILABLE && /being reopened/.test(err.details) ? "retry" : `${err.code} ${err.details}`),
        ),
      );
      await Promise.all(writes);
      const answers = await Promise.all(reads);
      expect(answers.filter((a) => a !== "ok" && a !== "retry")).to.deep.equal([]);
      expect(answers.filter((a, i) => i % 2 === 0 && a !== "ok"), "GetModel waits for the reopen").to.deep.equal([]);

      await t.restart();
      const names = new Set((await call(t.client, "listModels", {})).models.map((m) => m.name));
      expect(acknowledged.filter((name) => !names.has(name))).to.deep.equal([]);
    });
  });

  describe("the registry of a server killed", () => {
    let child: ChildServer | undefined;
    afterEach(async () => {
      await child?.kill();
      child = undefined;
    });

    it("by SIGKILL while it takes writes again after a failed one keeps every acknowledged write", async () => {
      const dataDir = join(disk.dir, "data");
      await mkdir(dataDir);
      const logFile = join(disk.dir, "..", "server.log");
      child = await spawnServer({ dataDir, args: ["--min-free-bytes", "0"], logFile });
      const client = child.client;
      await call(client, "registerModel", { model: modelSpec({ name: "base" }) });
      await disk.fill();
      const acknowledged = ["base"];
      for (let i = 0; i < 5000; i++) {
        try {
          await call(client, "registerModel", { model: modelSpec({ name: `full-${i}` }) });
          acknowledged.push(`full-${i}`);
        } catch (err) {
          expect((err as { code: number }).code).to.equal(status.RESOURCE_EXHAUSTED);
          break;
        }
      }
      await disk.release(16 * 1024 * 1024);
      // the first write reopens the registry; the kill lands once some are acknowledged, others on their way
      const killed = child;
      let answered = 0;
      await Promise.allSettled(
        Array.from({ length: 60 }, (_, i) =>
          call(client, "registerModel", { model: modelSpec({ name: `at-kill-${i}` }) }).then(() => {
            acknowledged.push(`at-kill-${i}`);
            if (++answered === 20) killed.process.kill("SIGKILL");
          }),
        ),
      );
      await killed.kill();
      expect(answered).to.be.at.least(20);

      child = await spawnServer({ dataDir, args: ["--min-free-bytes", "0"], logFile });
      const { models } = await call(child.client, "listModels", {});
      const names = new Set(models.map((m) => m.name));
      expect(acknowledged.filter((name) => !names.has(name))).to.deep.equal([]);
      // whatever else is there is whole
      for (const model of models) expect(model.dimensions).to.equal(384);
    });
  });

  describe("a start", () => {
    it("exits non-zero naming the cause when the registry cannot be opened for lack of space", async () => {
      t = await serverOnDisk();
      // entries left in LevelDB's log: opening recovers them into a table, which needs room
      for (let i = 0; i < 20; i++) await call(t.client, "registerModel", { model: modelSpec({ name: `m-${i}` }) });
      await t.close();
      t = undefined;
      await disk.fill();
      const run = await runCli("127.0.0.1:1", ["serve", "--listen", "127.0.0.1:0", "--data-dir", join(disk.dir, "data"), "--log-format", "json"]);
      expect(run.code).to.not.equal(0);
      const output = run.stdout + run.stderr;
      expect(output).to.match(/no space left on device/i);
      expect(output).to.include(join(disk.dir, "data", "registry"));
      expect(output).to.not.include("modelcache is serving");
    });
  });

  describe("the free-space floor", () => {
    it("is named at start when the disk is already under it, and a pull it refuses says to free space or lower --min-free-bytes", async () => {
      const logs = captureLogs();
      const dataDir = join(disk.dir, "data");
      await mkdir(dataDir);
      // the default --min-free-bytes, 1 GiB, on a 96 MiB disk
      t = await startTestServer({ dataDir, logger: logs.logger });
      const warning = logs.lines.find((line) => line.level === 40 && String(line.msg).includes("--min-free-bytes"));
      expect(warning, "a warning at start naming --min-free-bytes").to.not.equal(undefined);
      expect(warning!.msg).to.match(/lower --min-free-bytes/);
      expect(warning!.cacheDir).to.equal(join(dataDir, "ai_models_cache"));

      await call(t.client, "registerModel", { model: modelSpec() });
      const outcome = await pull(t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
      expect(outcome.error?.code).to.equal(status.RESOURCE_EXHAUSTED);
      expect(outcome.error!.details).to.match(/free space on that filesystem, or lower --min-free-bytes/);
      expect(outcome.error!.details).to.not.match(/raise the limit/);
      const cli = await runCli(t.server.address, ["pull", "minilm", "--fixture-dir", FIXTURE_DIR]);
      expect(cli.code).to.not.equal(0);
      expect(cli.stderr).to.match(/lower --min-free-bytes/);
    });
  });
});
