import { execFileSync } from "node:child_process";
import { link, lstat, mkdir, mkdtemp, readFile, readdir, rm, stat, symlink, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import { join } from "node:path";
import { credentials, status } from "@grpc/grpc-js";
import { expect } from "chai";
import { pino } from "pino";
import { CacheStatus, ModelCacheServiceClient, ModelStatus } from "../generated/modelcache/v1/model_cache.js";
import { CacheLayout } from "../src/cache/layout.js";
import { ModelLocks } from "../src/cache/model-lock.js";
import { startServer } from "../src/server/start-server.js";
import { parkForRemoval } from "../src/cache/remove-install.js";
import { spawnServer } from "./support/child-server.js";
import { FakeHub } from "./support/fake-hub.js";
import { healthBecomes, healthCheck } from "./support/health-check.js";
import { captureLogs } from "./support/log-capture.js";
import { makeSourceDir, sha256 } from "./support/source-dir.js";
import { type TestServer, call, modelSpec, pull, pullOk, serverWithModel, startTestServer } from "./support/test-server.js";

const MIB = 1024 * 1024;
/** bytes that differ for each seed, and do not compress to nothing */
function content(seed: number, size: number): Buffer {
  const bytes = Buffer.alloc(size);
  for (let i = 0; i + 4 <= size; i += 4) bytes.writeUInt32LE(((i + 1) * 2654435761 + seed * 40503) >>> 0, i);
  return bytes;
}
const completedFiles = (events: Awaited<ReturnType<typeof pullOk>>) => events.filter((e) => e.fileCompleted).map((e) => e.fileCompleted!);
/** Bytes the tree takes on disk, each hard-linked file counted once (du's rule), but the locks and their space reserve, which hold no content. */
const du = (dir: string) => Number(execFileSync("du", ["-sb", "--exclude=.locks", dir], { encoding: "utf8" }).split("\t")[0]);

describe("the content store", () => {
  describe("from a directory", () => {
    const suite = serverWithModel();
    const installed = (name: string, path: string) => join(suite.t.cacheRoot, name, path);

    it("stores the files two models share once: same inode, du counts one copy, the second pull writes nothing", async () => {
      const dir = await suite.source({ "model.bin": content(1, 2 * MIB), "config.json": '{"a":1}' });
      await call(suite.t.client, "registerModel", { model: modelSpec({ name: "twin" }) });
      const first = await pullOk(suite.t.client, { name: "minilm", fixtureDir: dir });
      expect(completedFiles(first).map((f) => f.reused)).to.deep.equal([false, false]);
      const second = await pullOk(suite.t.client, { name: "twin", fixtureDir: dir });
      expect(completedFiles(second).map((f) => f.reused)).to.deep.equal([true, true]);
      // the total at the end, also for a directory (its PullStarted cannot know it)
      const reusedAtEnd = (events: typeof first) => events.find((e) => e.completed)!.completed!.reusedBytes;
      expect(reusedAtEnd(first)).to.equal(0);
      expect(reusedAtEnd(second)).to.equal(2 * MIB + '{"a":1}'.length);
      for (const path of ["model.bin", "config.json"]) {
        const [a, b] = [await lstat(installed("minilm", path)), await lstat(installed("twin", path))];
        expect(a.ino, path).to.equal(b.ino);
        // the store's name plus the two installs
        expect(a.nlink, path).to.equal(3);
        expect(a.mode & 0o777, path).to.equal(0o444);
      }
      expect(du(suite.t.cacheRoot)).to.be.below(2 * MIB + 256 * 1024);
      expect(await readFile(installed("twin", "config.json"), "utf8")).to.equal('{"a":1}');
    });

    it("never links stored content that changed behind its back, even with size and mtime restored: it is copied again", async () => {
      const bytes = content(2, MIB);
      const dir = await suite.source({ "model.bin": bytes });
      await call(suite.t.client, "registerModel", { model: modelSpec({ name: "twin" }) });
      await pullOk(suite.t.client, { name: "minilm", fixtureDir: dir });
      const blob = join(suite.t.cacheRoot, ".blobs", "sha256", sha256(bytes));
      const before = await stat(blob);
      const rotten = Buffer.from(bytes);
      rotten[1000] ^= 0xff;
      await writeFile(blob, rotten);
      await utimes(blob, before.atime, before.mtime);
      const events = await pullOk(suite.t.client, { name: "twin", fixtureDir: dir });
      expect(completedFiles(events)[0]!.reused).to.equal(false);
      expect(sha256(await readFile(installed("twin", "model.bin")))).to.equal(sha256(bytes));
      expect((await call(suite.t.client, "inspectCache", { name: "twin", deep: true })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
      // the rotten inode left the store: only the install that already held it still does
      expect((await lstat(installed("twin", "model.bin"))).ino).to.equal((await lstat(blob)).ino);
      expect((await lstat(installed("minilm", "model.bin"))).ino).to.not.equal((await lstat(blob)).ino);
    });
  });

  describe("removing content", () => {
    const suite = serverWithModel();

    it("drop of one of two sharing models frees only its exclusive bytes, and the other stays healthy on a deep inspect", async () => {
      const shared = content(3, MIB);
      const own = content(4, 300 * 1024);
      const a = await suite.source({ "model.bin": shared, "own.bin": own });
      const b = await suite.source({ "model.bin": shared, "other.bin": "other" });
      await call(suite.t.client, "registerModel", { model: modelSpec({ name: "twin" }) });
      await pullOk(suite.t.client, { name: "minilm", fixtureDir: a });
      await pullOk(suite.t.client, { name: "twin", fixtureDir: b });
      const manifestBytes = (await stat(join(suite.t.cacheRoot, "minilm", "manifest.json"))).size;
      const inspected = await call(suite.t.client, "inspectCache", { name: "minilm", deep: false });
      expect(inspected.exclusiveBytes).to.equal(own.length + manifestBytes);
      expect(inspected.footprintBytes).to.equal(shared.length + own.length + manifestBytes);
      const dropped = await call(suite.t.client, "dropCache", { name: "minilm", force: false });
      expect(dropped.freedBytes).to.equal(own.length + manifestBytes);
      const blobs = await readdir(join(suite.t.cacheRoot, ".blobs", "sha256"));
      expect(blobs).to.include(sha256(shared)).and.not.include(sha256(own));
      expect((await call(suite.t.client, "inspectCache", { name: "twin", deep: true })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
      // the last reference goes with the second model
      await call(suite.t.client, "unregisterModel", { name: "twin", dropCache: true });
      expect(await readdir(join(suite.t.cacheRoot, ".blobs", "sha256"))).to.deep.equal([]);
    });
  });

  describe("from a hub", () => {
    let hub: FakeHub;
    let t: TestServer;
    const shards = [0, 1, 2, 3].map((i) => content(10 + i, 256 * 1024));
    beforeEach(async () => {
      const extra = Object.fromEntries(shards.map((bytes, i) => [`shard-${i}.safetensors`, bytes]));
      hub = await FakeHub.serve("acme/sharded", join(import.meta.dirname, "..", "fixtures", "tiny-minilm"), extra);
      t = await startTestServer({ hubUrl: hub.url, progressIntervalMs: 0 });
      await call(t.client, "registerModel", { model: modelSpec({ source: "acme/sharded", revision: "main" }) });
    });
    afterEach(async () => {
      await t.close();
      await hub.close();
    });
    const contentRequests = () => hub.requests.filter((r) => r.path.includes("/resolve/") || r.path.startsWith("/lfs/"));

    it("links content the store holds without asking for its bytes, known by sha256 (LFS) or git blob id (the rest)", async () => {
      const first = await pullOk(t.client, { name: "minilm" });
      expect(first[0]!.started!.reusedBytes).to.equal(0);
      await call(t.client, "registerModel", { model: modelSpec({ name: "twin", source: "acme/sharded", revision: "main" }) });
      const asked = contentRequests().length;
      const second = await pullOk(t.client, { name: "twin" });
      expect(contentRequests().length).to.equal(asked);
      expect(second[0]!.started!.reusedBytes).to.equal(second[0]!.started!.totalBytes);
      expect(completedFiles(second).every((f) => f.reused)).to.equal(true);
      expect((await call(t.client, "inspectCache", { name: "twin", deep: true })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
    });

    it("downloads only the changed shard of a new revision", async () => {
      await pullOk(t.client, { name: "minilm" });
      hub.commitFile("shard-2.safetensors", content(99, 256 * 1024));
      const before = hub.requests.length;
      const events = await pullOk(t.client, { name: "minilm" });
      const fetched = hub.requests.slice(before).filter((r) => r.path.includes("/resolve/") || r.path.startsWith("/lfs/"));
      const sent = fetched.reduce((sum, r) => sum + r.sent, 0);
      expect(sent).to.equal(256 * 1024);
      expect(completedFiles(events).filter((f) => !f.reused).map((f) => f.path)).to.deep.equal(["shard-2.safetensors"]);
      expect(events[0]!.started!.reusedBytes).to.equal(events[0]!.started!.totalBytes - 256 * 1024);
      expect((await call(t.client, "inspectCache", { name: "minilm", deep: true })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
      // the old shard's content went with the install that held it
      expect(await readdir(join(t.cacheRoot, ".blobs", "sha256"))).to.not.include(sha256(shards[2]!));
    });

    it("fetches again content found corrupt in the store, and never links it", async () => {
      await pullOk(t.client, { name: "minilm" });
      const blob = join(t.cacheRoot, ".blobs", "sha256", sha256(shards[1]!));
      const before = await stat(blob);
      const rotten = Buffer.from(shards[1]!);
      rotten[7] ^= 0xff;
      await writeFile(blob, rotten);
      await utimes(blob, before.atime, before.mtime);
      await call(t.client, "registerModel", { model: modelSpec({ name: "twin", source: "acme/sharded", revision: "main" }) });
      const events = await pullOk(t.client, { name: "twin" });
      expect(completedFiles(events).filter((f) => !f.reused).map((f) => f.path)).to.deep.equal(["shard-1.safetensors"]);
      expect((await call(t.client, "inspectCache", { name: "twin", deep: true })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
    });
  });

  describe("a crash during a drop", () => {
    const suite = serverWithModel();

    it("leaves the model sharing content healthy, and only unreferenced content, which PruneCache removes", async () => {
      const shared = content(7, MIB);
      const own = content(8, 128 * 1024);
      const a = await suite.source({ "model.bin": shared, "own.bin": own });
      const b = await suite.source({ "model.bin": shared });
      await call(suite.t.client, "registerModel", { model: modelSpec({ name: "twin" }) });
      await pullOk(suite.t.client, { name: "minilm", fixtureDir: a });
      await pullOk(suite.t.client, { name: "twin", fixtureDir: b });
      // the drop parked the install and had deleted part of it when the server died
      await parkForRemoval(suite.t.server.runtime.layout, "minilm");
      const [parked] = await readdir(join(suite.t.cacheRoot, ".purge"));
      await rm(join(suite.t.cacheRoot, ".purge", parked!, "model.bin"));
      await suite.t.restart();
      expect(await readdir(join(suite.t.cacheRoot, ".purge"))).to.deep.equal([]);
      expect((await call(suite.t.client, "inspectCache", { name: "minilm", deep: false })).status).to.equal(CacheStatus.CACHE_STATUS_MISSING);
      expect((await call(suite.t.client, "inspectCache", { name: "twin", deep: true })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
      expect(await call(suite.t.client, "pruneCache", { dryRun: false })).to.deep.equal({ freedBytes: own.length, blobsRemoved: 1, partialsRemoved: 0, dryRun: false });
      expect(await readdir(join(suite.t.cacheRoot, ".blobs", "sha256"))).to.deep.equal([sha256(shared)]);
      expect((await call(suite.t.client, "inspectCache", { name: "twin", deep: true })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
    });
  });

  describe("installs of an earlier version", () => {
    const suite = serverWithModel();

    it("are adopted after startup without a download: each matching file becomes stored content, a file that does not match leaves its model UNHEALTHY", async () => {
      const shared = content(6, MIB);
      const dir = await suite.source({ "model.bin": shared, "config.json": '{"x":1}' });
      await call(suite.t.client, "registerModel", { model: modelSpec({ name: "twin" }) });
      await pullOk(suite.t.client, { name: "minilm", fixtureDir: dir });
      await pullOk(suite.t.client, { name: "twin", fixtureDir: dir });
      // what an earlier version left: plain files beside each manifest, no store
      const root = suite.t.cacheRoot;
      for (const name of ["minilm", "twin"]) {
        for (const path of ["model.bin", "config.json"]) {
          const bytes = await readFile(join(root, name, path));
          await rm(join(root, name, path));
          await writeFile(join(root, name, path), bytes);
        }
      }
      await rm(join(root, ".blobs"), { recursive: true });
      const rotten = Buffer.from('{"x":2}');
      await writeFile(join(root, "twin", "config.json"), rotten);
      await suite.t.restart();
      // adopted in the background once the server listens
      await healthBecomes(suite.t.server.address, "SERVING");
      const blob = (bytes: Buffer | string) => join(root, ".blobs", "sha256", sha256(bytes));
      for (const path of ["model.bin", "config.json"]) {
        expect((await lstat(join(root, "minilm", path))).ino, path).to.equal((await lstat(blob(path === "model.bin" ? shared : '{"x":1}'))).ino);
      }
      expect((await lstat(join(root, "twin", "model.bin"))).ino).to.equal((await lstat(blob(shared))).ino);
      // not adopted: the store never holds content that does not match its name
      expect((await lstat(join(root, "twin", "config.json"))).nlink).to.equal(1);
      expect(await readdir(join(root, ".blobs", "sha256"))).to.not.include(sha256(rotten));
      expect((await call(suite.t.client, "inspectCache", { name: "minilm", deep: true })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
      expect((await call(suite.t.client, "getModel", { name: "twin" })).model!.status).to.equal(ModelStatus.MODEL_STATUS_UNHEALTHY);
      // a pull repairs it from the store, nothing written but the changed file
      const events = await pullOk(suite.t.client, { name: "twin", fixtureDir: dir });
      expect(completedFiles(events).map((f) => f.reused)).to.deep.equal([true, true]);
      expect((await call(suite.t.client, "inspectCache", { name: "twin", deep: true })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
    });
  });

  describe("installs of an earlier version, adopted in the background", () => {
    const names = Array.from({ length: 8 }, (_, i) => `m0${i}`);
    const shared = content(8, 256 * 1024);
    const own = (name: string) => `{"model":"${name}"}`;
    const blob = (root: string, bytes: Buffer | string) => join(root, ".blobs", "sha256", sha256(bytes));
    /** A cache root holding `names` installed the way an earlier version left them: plain files beside each manifest, no store. */
    async function earlierCache(dataDir: string): Promise<string> {
      const sources: string[] = [];
      const server = await startServer({ listen: "127.0.0.1:0", dataDir, logger: pino({ level: "silent" }), offline: true });
      const client = new ModelCacheServiceClient(server.address, credentials.createInsecure());
      try {
        for (const name of names) {
          const made = await makeSourceDir({ "shared.bin": shared, "own.json": own(name) });
          sources.push(made.dir);
          await call(client, "registerModel", { model: modelSpec({ name }) });
          await pullOk(client, { name, fixtureDir: made.dir });
        }
      } finally {
        client.close();
        await server.close();
        for (const dir of sources) await rm(dir, { recursive: true, force: true });
      }
      const root = join(dataDir, "ai_models_cache");
      for (const name of names) {
        for (const path of ["shared.bin", "own.json"]) {
          const bytes = await readFile(join(root, name, path));
          await rm(join(root, name, path));
          await writeFile(join(root, name, path), bytes);
        }
      }
      await rm(join(root, ".blobs"), { recursive: true });
      return root;
    }
    /** Every install whole, each file the stored content's inode, and the store holding exactly the content they name. */
    async function expectAdopted(root: string, client: ModelCacheServiceClient): Promise<void> {
      for (const name of names) {
        expect(await readFile(join(root, name, "shared.bin")), name).to.deep.equal(shared);
        expect(await readFile(join(root, name, "own.json"), "utf8"), name).to.equal(own(name));
        expect((await lstat(join(root, name, "shared.bin"))).ino, name).to.equal((await lstat(blob(root, shared))).ino);
        expect((await lstat(join(root, name, "own.json"))).ino, name).to.equal((await lstat(blob(root, own(name)))).ino);
        expect((await call(client, "inspectCache", { name, deep: true })).status, name).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
        expect((await call(client, "getModel", { name })).model!.status, name).to.equal(ModelStatus.MODEL_STATUS_INSTALLED);
      }
      expect((await readdir(join(root, ".blobs", "sha256"))).sort()).to.deep.equal([shared, ...names.map(own)].map((b) => sha256(b)).sort());
      expect((await lstat(blob(root, shared))).nlink).to.equal(names.length + 1);
    }

    it("the server listens first: Health says NOT_SERVING while ListModels and GetModel answer, then SERVING once the last is adopted", async function () {
      this.timeout(60_000);
      const dataDir = await mkdtemp(join(tmpdir(), "modelcache-adopt-"));
      const root = await earlierCache(dataDir);
      // adoption waits for each model's lock: the test holding m04's pauses it there
      const release = await new ModelLocks(new CacheLayout(root)).acquire("m04", undefined);
      let released = false;
      const logs = captureLogs();
      const server = await startServer({ listen: "127.0.0.1:0", dataDir, logger: logs.logger, offline: true });
      const client = new ModelCacheServiceClient(server.address, credentials.createInsecure());
      try {
        await logs.seen((l) => l.model === "m04" && String(l.msg).startsWith("waiting for model lock"));
        expect(await healthCheck(server.address)).to.deep.equal({ code: status.OK, status: "NOT_SERVING" });
        expect(await healthCheck(server.address, "modelcache.v1.ModelCacheService")).to.deep.equal({ code: status.OK, status: "NOT_SERVING" });
        const listed = (await call(client, "listModels", {})).models;
        expect(listed.map((m) => [m.name, m.status])).to.deep.equal(names.map((name) => [name, ModelStatus.MODEL_STATUS_INSTALLED]));
        expect((await call(client, "getModel", { name: "m06" })).model!.status).to.equal(ModelStatus.MODEL_STATUS_INSTALLED);
        // the models before the one held are adopted, those after not yet, and usable as they are
        expect((await lstat(join(root, "m03", "own.json"))).ino).to.equal((await lstat(blob(root, own("m03")))).ino);
        expect((await lstat(join(root, "m05", "own.json"))).nlink).to.equal(1);
        expect(await readFile(join(root, "m05", "own.json"), "utf8")).to.equal(own("m05"));
        const serving = healthBecomes(server.address, "SERVING", "modelcache.v1.ModelCacheService");
        released = true;
        await release();
        await serving;
        expect(await healthCheck(server.address)).to.deep.equal({ code: status.OK, status: "SERVING" });
        await expectAdopted(root, client);
        expect(logs.lines.find((l) => l.msg === "moved installs of an earlier version into the content store")).to.deep.include({ adopted: names, unhealthy: [], failed: [] });
      } finally {
        if (!released) await release();
        client.close();
        await server.close();
        await rm(dataDir, { recursive: true, force: true });
      }
    });

    it("a model whose adoption fails is logged and never stops the server: it serves with that install as it was, and the next start adopts it", async function () {
      this.timeout(60_000);
      const dataDir = await mkdtemp(join(tmpdir(), "modelcache-adopt-"));
      const root = await earlierCache(dataDir);
      // immutable: even root cannot make it read-only, so its adoption fails
      const stuck = join(root, "m03", "own.json");
      try {
        execFileSync("chattr", ["+i", stuck]);
      } catch {
        // chattr needs root and a filesystem with attributes (ext4, xfs, btrfs)
        await rm(dataDir, { recursive: true, force: true });
        this.skip();
      }
      const logs = captureLogs();
      let server = await startServer({ listen: "127.0.0.1:0", dataDir, logger: logs.logger, offline: true });
      let client = new ModelCacheServiceClient(server.address, credentials.createInsecure());
      try {
        await healthBecomes(server.address, "SERVING");
        const outcome = logs.lines.find((l) => l.msg === "moved installs of an earlier version into the content store")!;
        expect(outcome.level).to.equal(40);
        expect(outcome.adopted).to.deep.equal(names.filter((n) => n !== "m03"));
        expect((outcome.failed as { name: string; error: string }[]).map((f) => f.name)).to.deep.equal(["m03"]);
        expect(await readFile(stuck, "utf8")).to.equal(own("m03"));
        expect((await call(client, "getModel", { name: "m03" })).model!.status).to.equal(ModelStatus.MODEL_STATUS_INSTALLED);
        execFileSync("chattr", ["-i", stuck]);
        client.close();
        await server.close();
        server = await startServer({ listen: "127.0.0.1:0", dataDir, logger: pino({ level: "silent" }), offline: true });
        client = new ModelCacheServiceClient(server.address, credentials.createInsecure());
        await healthBecomes(server.address, "SERVING");
        await expectAdopted(root, client);
      } finally {
        execFileSync("chattr", ["-i", stuck]);
        client.close();
        await server.close();
        await rm(dataDir, { recursive: true, force: true });
      }
    });

    it("a SIGKILL during adoption loses nothing: the restart adopts the rest, every install whole and sharing the store", async function () {
      this.timeout(60_000);
      const dataDir = await mkdtemp(join(tmpdir(), "modelcache-adopt-"));
      const root = await earlierCache(dataDir);
      // m06 half adopted, as a kill between two of its files leaves it
      await mkdir(join(root, ".blobs", "sha256"), { recursive: true });
      await link(join(root, "m06", "shared.bin"), blob(root, shared));
      const release = await new ModelLocks(new CacheLayout(root)).acquire("m04", undefined);
      let released = false;
      let server = await spawnServer({ dataDir, args: ["--offline"] });
      try {
        await server.seen((e) => e.model === "m04" && String(e.msg).startsWith("waiting for model lock"));
        expect(await healthCheck(server.address)).to.deep.equal({ code: status.OK, status: "NOT_SERVING" });
        expect((await lstat(join(root, "m03", "own.json"))).nlink).to.equal(2);
        expect((await lstat(join(root, "m05", "own.json"))).nlink).to.equal(1);
        await server.kill();
        released = true;
        await release();
        server = await spawnServer({ dataDir, args: ["--offline"] });
        await healthBecomes(server.address, "SERVING");
        await expectAdopted(root, server.client);
        // the killed server's ingest area is gone; the running server's holds nothing
        expect(await readdir(join(root, ".blobs", "ingest"))).to.have.length(1);
        for (const area of await readdir(join(root, ".blobs", "ingest"))) expect(await readdir(join(root, ".blobs", "ingest", area))).to.deep.equal([]);
      } finally {
        if (!released) await release();
        await server.kill();
        await rm(dataDir, { recursive: true, force: true });
      }
    });
  });

  describe("the cache as a whole", () => {
    const suite = serverWithModel();

    it("DescribeCache reports logical vs stored bytes, free space and the installs least recently used first; PruneCache has nothing to free", async () => {
      const shared = content(5, MIB);
      const dir = await suite.source({ "model.bin": shared });
      await call(suite.t.client, "registerModel", { model: modelSpec({ name: "twin" }) });
      await pullOk(suite.t.client, { name: "twin", fixtureDir: dir });
      await pullOk(suite.t.client, { name: "minilm", fixtureDir: dir });
      const described = await call(suite.t.client, "describeCache", {});
      const manifests = (await stat(join(suite.t.cacheRoot, "minilm", "manifest.json"))).size + (await stat(join(suite.t.cacheRoot, "twin", "manifest.json"))).size;
      expect(described.cacheRoot).to.equal(suite.t.cacheRoot);
      expect(described.logicalBytes).to.equal(2 * shared.length + manifests);
      expect(described.storedBytes).to.equal(shared.length + manifests);
      expect(described.models.map((m) => m.name)).to.deep.equal(["twin", "minilm"]);
      expect(described.models[0]!.sizeBytes).to.equal(shared.length + (await stat(join(suite.t.cacheRoot, "twin", "manifest.json"))).size);
      expect(described.models[0]!.exclusiveBytes).to.equal((await stat(join(suite.t.cacheRoot, "twin", "manifest.json"))).size);
      expect(described.filesystemTotalBytes).to.be.above(described.filesystemFreeBytes);
      expect(described.reclaimableBytes).to.equal(0);
      expect(await call(suite.t.client, "pruneCache", { dryRun: false })).to.deep.equal({ freedBytes: 0, blobsRemoved: 0, partialsRemoved: 0, dryRun: false });
      expect(await readdir(join(suite.t.cacheRoot, ".blobs", "sha256"))).to.deep.equal([sha256(shared)]);
    });

    it("PruneCache leaves a name in the store that is not a sha256 alone", async () => {
      await writeFile(join(suite.t.cacheRoot, ".blobs", "sha256", "not-content"), "x");
      expect((await call(suite.t.client, "pruneCache", { dryRun: false })).blobsRemoved).to.equal(0);
      expect(await readdir(join(suite.t.cacheRoot, ".blobs", "sha256"))).to.deep.equal(["not-content"]);
    });
  });

  it("DropCache and PruneCache during a pull never remove the content the pull holds", async () => {
    const small = content(40, 64 * 1024);
    const hub = await FakeHub.serve("acme/slow", join(import.meta.dirname, "..", "fixtures", "tiny-minilm"), { "small.safetensors": small, "large.safetensors": content(41, 2 * MIB) });
    const t = await startTestServer({ hubUrl: hub.url, progressIntervalMs: 0 });
    const made = await mkdtemp(join(tmpdir(), "modelcache-shared-"));
    try {
      await writeFile(join(made, "small.safetensors"), small);
      await call(t.client, "registerModel", { model: modelSpec({ source: "acme/slow" }) });
      await call(t.client, "registerModel", { model: modelSpec({ name: "twin" }) });
      await pullOk(t.client, { name: "twin", fixtureDir: made });
      const twinManifest = (await stat(join(t.cacheRoot, "twin", "manifest.json"))).size;
      hub.faults.bytesPerSecond = 1024 * 1024;
      let during: Promise<unknown> | undefined;
      const outcome = await pull(t.client, { name: "minilm" }, {
        onEvent: (event) => {
          // the shared file is linked into the pull's staging dir; the large one is still coming
          if (event.fileCompleted?.path === "small.safetensors") {
            during = (async () => {
              const dropped = await call(t.client, "dropCache", { name: "twin", force: false });
              const pruned = await call(t.client, "pruneCache", { dryRun: false });
              return { dropped, pruned };
            })();
          }
        },
      });
      expect(outcome.error).to.equal(undefined);
      const { dropped, pruned } = (await during) as { dropped: { freedBytes: number }; pruned: { blobsRemoved: number } };
      // the pull's link keeps the shared content: dropping twin frees only its manifest
      expect(dropped.freedBytes).to.equal(twinManifest);
      expect(pruned.blobsRemoved).to.equal(0);
      expect(completedFiles(outcome.events).find((f) => f.path === "small.safetensors")!.reused).to.equal(true);
      expect((await call(t.client, "inspectCache", { name: "minilm", deep: true })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
    } finally {
      await t.close();
      await hub.close();
      await rm(made, { recursive: true, force: true });
    }
  });

  it("never follows a link in the store's place: it is removed and the content copied again", async () => {
    const t = await startTestServer();
    const made = await mkdtemp(join(tmpdir(), "modelcache-link-"));
    try {
      const bytes = Buffer.from("the real content");
      await writeFile(join(made, "a.bin"), bytes);
      await writeFile(join(made, "outside.bin"), "elsewhere, not ours");
      await call(t.client, "registerModel", { model: modelSpec() });
      await mkdir(join(t.cacheRoot, ".blobs", "sha256"), { recursive: true });
      await symlink(join(made, "outside.bin"), join(t.cacheRoot, ".blobs", "sha256", sha256(bytes)));
      await pullOk(t.client, { name: "minilm", fixtureDir: made });
      const stored = await lstat(join(t.cacheRoot, ".blobs", "sha256", sha256(bytes)));
      expect(stored.isFile()).to.equal(true);
      expect(await readFile(join(made, "outside.bin"), "utf8")).to.equal("elsewhere, not ours");
      expect(await readFile(join(t.cacheRoot, "minilm", "a.bin"), "utf8")).to.equal("the real content");
    } finally {
      await t.close();
      await rm(made, { recursive: true, force: true });
    }
  });

  it("after a SIGKILLed pull, PruneCache (dry_run first) removes the content nothing references, and the next pull installs", async function () {
    this.timeout(60_000);
    const files = Object.fromEntries([0, 1, 2].map((i) => [`small-${i}.safetensors`, content(20 + i, 64 * 1024)]));
    files["large.safetensors"] = content(30, 4 * MIB);
    const hub = await FakeHub.serve("acme/slow", join(import.meta.dirname, "..", "fixtures", "tiny-minilm"), files);
    const work = await mkdtemp(join(tmpdir(), "modelcache-prune-"));
    const dataDir = join(work, "data");
    const blobs = join(dataDir, "ai_models_cache", ".blobs", "sha256");
    let server = await spawnServer({ dataDir, args: ["--hub-url", hub.url] });
    try {
      await call(server.client, "registerModel", { model: modelSpec({ source: "acme/slow" }) });
      hub.faults.bytesPerSecond = 512 * 1024;
      const running = pull(server.client, { name: "minilm" });
      // the small files are in the store, the large one still downloading
      while ((await readdir(blobs).catch(() => [])).length < 3) await sleep(20);
      await server.kill();
      await running.catch(() => undefined);
      hub.faults.bytesPerSecond = undefined;
      server = await spawnServer({ dataDir, args: ["--hub-url", hub.url] });
      const left = await readdir(blobs);
      let leftBytes = 0;
      for (const blob of left) leftBytes += (await stat(join(blobs, blob))).size;
      expect(left.length).to.be.at.least(3);
      const described = await call(server.client, "describeCache", {});
      expect(described.reclaimableBytes).to.equal(leftBytes);
      const dry = await call(server.client, "pruneCache", { dryRun: true });
      expect(dry).to.include({ dryRun: true, blobsRemoved: left.length });
      expect(await readdir(blobs)).to.deep.equal(left);
      const pruned = await call(server.client, "pruneCache", { dryRun: false });
      expect(pruned).to.include({ dryRun: false, blobsRemoved: left.length, freedBytes: leftBytes });
      expect(await readdir(blobs)).to.deep.equal([]);
      await pullOk(server.client, { name: "minilm" });
      expect((await call(server.client, "inspectCache", { name: "minilm", deep: true })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
    } finally {
      await server.kill();
      await hub.close();
      await rm(work, { recursive: true, force: true });
    }
  });
});
