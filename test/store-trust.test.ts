import { execFileSync } from "node:child_process";
import type { Stats } from "node:fs";
import { link, lstat, mkdir, mkdtemp, readFile, readdir, rm, stat, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { pino } from "pino";
import { CacheStatus, ModelStatus, UnhealthyReason } from "../generated/modelcache/v1/model_cache.js";
import { ModelCacheError } from "../src/errors.js";
import { startServer } from "../src/server/start-server.js";
import { collectGarbage } from "../src/store/collect-garbage.js";
import { ContentStore, signatureOf } from "../src/store/content-store.js";
import { commitContent } from "../src/store/ingest.js";
import { clearIngest } from "../src/store/ingest-areas.js";
import { linkContent } from "../src/store/link-content.js";
import { matchContent } from "../src/store/match-content.js";
import { PROBE_PREFIX } from "../src/store/probe-hard-links.js";
import { renewSignature, verifyContent } from "../src/store/verify-content.js";
import { spawnServer } from "./support/child-server.js";
import { FakeHub } from "./support/fake-hub.js";
import { healthBecomes } from "./support/health-check.js";
import { runCli } from "./support/run-cli.js";
import { makeSourceDir, sha256 } from "./support/source-dir.js";
import { FIXTURE_DIR, type TestServer, call, modelSpec, pull, pullOk, serverWithModel, startTestServer } from "./support/test-server.js";

/** bytes that differ for each seed */
function content(seed: number, size: number): Buffer {
  const bytes = Buffer.alloc(size);
  for (let i = 0; i + 4 <= size; i += 4) bytes.writeUInt32LE(((i + 1) * 2654435761 + seed * 40503) >>> 0, i);
  return bytes;
}
const completedFiles = (events: Awaited<ReturnType<typeof pullOk>>) => events.filter((e) => e.fileCompleted).map((e) => e.fileCompleted!);

/** Polls until `check` holds; fails naming `what` after a generous bound (a liveness bound, not a timing assertion). */
async function eventually(what: string, check: () => Promise<boolean>): Promise<void> {
  const until = Date.now() + 20_000;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`never happened: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** Flips one byte of a file in place, same size: what a consumer writing through its install's file does (root ignores 0444). */
async function writeThrough(path: string): Promise<void> {
  const bytes = await readFile(path);
  bytes[10] = bytes[10]! ^ 0xff;
  await writeFile(path, bytes);
}

/** A server on an existing data dir, started in this process and closed at once. */
async function startTestServerIn(dataDir: string): Promise<void> {
  const server = await startServer({ listen: "127.0.0.1:0", dataDir, logger: pino({ level: "silent" }), offline: true });
  await server.close();
}

const status = async (t: TestServer, name: string) => (await call(t.client, "getModel", { name })).model!.status;

describe("trust in stored content", () => {
  describe("from a directory", () => {
    const suite = serverWithModel();
    const installed = (name: string, path: string) => join(suite.t.cacheRoot, name, path);
    const bytes = content(1, 512 * 1024);

    for (const how of ["dropped", "replaced"] as const) {
      it(`never links content written through an install that was then ${how}: the next pull hashes it, copies it afresh and is healthy`, async () => {
        const dir = await suite.source({ "model.bin": bytes });
        const other = await suite.source({ "other.bin": "other" });
        for (const name of ["twin", "third"]) await call(suite.t.client, "registerModel", { model: modelSpec({ name }) });
        await pullOk(suite.t.client, { name: "minilm", fixtureDir: dir });
        await pullOk(suite.t.client, { name: "twin", fixtureDir: dir });
        await writeThrough(installed("minilm", "model.bin"));
        if (how === "dropped") await call(suite.t.client, "dropCache", { name: "minilm", force: false });
        else await pullOk(suite.t.client, { name: "minilm", fixtureDir: other });

        const events = await pullOk(suite.t.client, { name: "third", fixtureDir: dir });
        expect(completedFiles(events)[0]!.reused).to.equal(false);
        expect(sha256(await readFile(installed("third", "model.bin")))).to.equal(sha256(bytes));
        expect(await status(suite.t, "third")).to.equal(ModelStatus.MODEL_STATUS_INSTALLED);
        expect((await call(suite.t.client, "inspectCache", { name: "third", deep: true })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
        // the model still linking the written content is no longer vouched for
        expect(await status(suite.t, "twin")).to.equal(ModelStatus.MODEL_STATUS_UNHEALTHY);
      });
    }

    /** minilm and twin installed from `dir`, sharing model.bin; then its stored content written through, size and mtime kept. Its stat before. */
    async function sharedThenRotten(dir: string): Promise<Stats> {
      for (const name of ["twin", "third"]) await call(suite.t.client, "registerModel", { model: modelSpec({ name }) });
      await pullOk(suite.t.client, { name: "minilm", fixtureDir: dir });
      await pullOk(suite.t.client, { name: "twin", fixtureDir: dir });
      const blob = join(suite.t.cacheRoot, ".blobs", "sha256", sha256(bytes));
      const before = await stat(blob);
      await writeThrough(blob);
      await utimes(blob, before.atime, before.mtime);
      return before;
    }

    it("condemns content a pull finds corrupt: quarantined, and every install holding it UNHEALTHY in GetModel and a shallow InspectCache, across a restart", async () => {
      const dir = await suite.source({ "model.bin": bytes, "config.json": '{"a":1}' });
      const before = await sharedThenRotten(dir);

      const events = await pullOk(suite.t.client, { name: "third", fixtureDir: dir });
      expect(completedFiles(events).find((f) => f.path === "model.bin")!.reused).to.equal(false);
      const quarantine = join(suite.t.cacheRoot, ".blobs", "quarantine");
      expect(await readdir(quarantine)).to.deep.equal([`${sha256(bytes)}.${before.ino}`]);
      const check = async () => {
        for (const name of ["minilm", "twin"]) {
          expect(await status(suite.t, name), name).to.equal(ModelStatus.MODEL_STATUS_UNHEALTHY);
          const report = await call(suite.t.client, "inspectCache", { name, deep: false });
          expect(report.status, name).to.equal(CacheStatus.CACHE_STATUS_UNHEALTHY);
          expect(report.reason, name).to.equal(UnhealthyReason.UNHEALTHY_REASON_CHECKSUM_MISMATCH);
          expect(report.detail, name).to.include("model.bin");
        }
        expect(await status(suite.t, "third")).to.equal(ModelStatus.MODEL_STATUS_INSTALLED);
      };
      await check();
      await suite.t.restart();
      await check();
      // a pull repairs a model; the quarantined copy goes with the last install that holds it
      await pullOk(suite.t.client, { name: "minilm", fixtureDir: dir });
      await pullOk(suite.t.client, { name: "twin", fixtureDir: dir });
      for (const name of ["minilm", "twin"]) expect((await call(suite.t.client, "inspectCache", { name, deep: true })).status, name).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
      expect(await readdir(quarantine)).to.deep.equal([]);
    });


    it("takes content it cannot quarantine out of the store all the same: the pull goes on, and the next one links the fresh copy", async () => {
      const dir = await suite.source({ "model.bin": bytes, "config.json": '{"a":1}' });
      // a file where the quarantine directory should be: the move there fails
      await mkdir(join(suite.t.cacheRoot, ".blobs"), { recursive: true });
      await writeFile(join(suite.t.cacheRoot, ".blobs", "quarantine"), "not a directory");
      const before = await sharedThenRotten(dir);
      const events = await pullOk(suite.t.client, { name: "third", fixtureDir: dir });
      expect(completedFiles(events).find((f) => f.path === "model.bin")!.reused).to.equal(false);
      for (const name of ["minilm", "twin"]) expect(await status(suite.t, name), name).to.equal(ModelStatus.MODEL_STATUS_UNHEALTHY);
      const blob = join(suite.t.cacheRoot, ".blobs", "sha256", sha256(bytes));
      expect((await stat(blob)).ino).to.not.equal(before.ino);
      expect(sha256(await readFile(blob))).to.equal(sha256(bytes));
      // no second condemnation: the fresh copy is trusted and linked
      await call(suite.t.client, "registerModel", { model: modelSpec({ name: "fourth" }) });
      const again = await pullOk(suite.t.client, { name: "fourth", fixtureDir: dir });
      expect(completedFiles(again).find((f) => f.path === "model.bin")!.reused).to.equal(true);
    });

    it("repairs, with --auto-repair and no --verify-interval, the models whose content a pull found corrupt, from the directory they came from", async () => {
      await suite.t.restart({ autoRepair: true });
      const dir = await suite.source({ "model.bin": bytes, "config.json": '{"a":1}' });
      await sharedThenRotten(dir);

      // the pull of a third model is what finds it: no background verification runs on this server
      await pullOk(suite.t.client, { name: "third", fixtureDir: dir });
      for (const name of ["minilm", "twin"]) {
        await eventually(`${name} repaired`, async () => (await status(suite.t, name)) === ModelStatus.MODEL_STATUS_INSTALLED);
        const report = await call(suite.t.client, "inspectCache", { name, deep: true });
        expect(report.status, name).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
        expect(sha256(await readFile(join(suite.t.cacheRoot, name, "model.bin"))), name).to.equal(sha256(bytes));
      }
    });
    it("condemns content a deep InspectCache finds corrupt: the other installs holding it are UNHEALTHY too", async () => {
      const dir = await suite.source({ "model.bin": bytes });
      await call(suite.t.client, "registerModel", { model: modelSpec({ name: "twin" }) });
      await pullOk(suite.t.client, { name: "minilm", fixtureDir: dir });
      await pullOk(suite.t.client, { name: "twin", fixtureDir: dir });
      await writeThrough(installed("minilm", "model.bin"));
      const deep = await call(suite.t.client, "inspectCache", { name: "minilm", deep: true });
      expect(deep.reason).to.equal(UnhealthyReason.UNHEALTHY_REASON_CHECKSUM_MISMATCH);
      expect(await status(suite.t, "twin")).to.equal(ModelStatus.MODEL_STATUS_UNHEALTHY);
      expect((await call(suite.t.client, "inspectCache", { name: "twin", deep: false })).reason).to.equal(UnhealthyReason.UNHEALTHY_REASON_CHECKSUM_MISMATCH);
      expect(await readdir(join(suite.t.cacheRoot, ".blobs", "sha256"))).to.not.include(sha256(bytes));
    });
  });

  describe("the store's own steps", () => {
    let root: string;
    beforeEach(async () => {
      root = await mkdtemp(join(tmpdir(), "modelcache-store-"));
    });
    afterEach(() => rm(root, { recursive: true, force: true }));

    it("links content only as verification checked it: a write between the check and the link leaves nothing linked, and the content is condemned next", async () => {
      const store = await new ContentStore(root).open();
      const bytes = content(9, 4096);
      const ingest = store.ingestPath();
      await writeFile(ingest, bytes);
      const hasher = async (path: string) => sha256(await readFile(path));
      const signal = new AbortController().signal;
      await store.withBlob(sha256(bytes), signal, async () => {
        // committed into a first install, as a pull does
        const committed = await commitContent(store, { path: ingest, sha256: sha256(bytes), sizeBytes: bytes.length }, hasher, signal, join(root, "first"));
        const checked = await verifyContent(store, sha256(bytes), hasher, signal);
        expect(checked).to.equal(committed);
        await writeThrough(store.blobPath(sha256(bytes)));
        expect(await linkContent(store, sha256(bytes), join(root, "linked"), checked!)).to.equal(false);
      });
      expect(await readdir(root)).to.not.include("linked");
      // and the next check hashes it, finds it corrupt and condemns it
      await store.withBlob(sha256(bytes), signal, async () => expect(await verifyContent(store, sha256(bytes), hasher, signal)).to.equal(undefined));
      expect(await readdir(store.quarantineDir)).to.have.length(1);
      // once the first install is gone, nothing links the quarantined copy: PruneCache's collection removes it
      await rm(join(root, "first"));
      expect(await collectGarbage(store, false)).to.deep.include({ removed: 1, freedBytes: bytes.length });
      expect(await readdir(store.quarantineDir)).to.deep.equal([]);
    });

    it("renews a signature only for the store's own step: a write that comes with a link is not taken for the store's", async () => {
      const store = await new ContentStore(root).open();
      try {
        const bytes = content(11, 4096);
        const ingest = store.ingestPath();
        await writeFile(ingest, bytes);
        const hasher = async (path: string) => sha256(await readFile(path));
        const signal = new AbortController().signal;
        await store.withBlob(sha256(bytes), signal, async () => {
          await commitContent(store, { path: ingest, sha256: sha256(bytes), sizeBytes: bytes.length }, hasher, signal, join(root, "first"));
          // the step links, and something writes through the new link in the same moment
          const renewed = await renewSignature(store, sha256(bytes), async () => {
            await link(store.blobPath(sha256(bytes)), join(root, "second"));
            await writeThrough(join(root, "second"));
          });
          expect(renewed).to.equal(false);
          // not vouched for: the next check hashes it and finds it corrupt
          expect(await verifyContent(store, sha256(bytes), hasher, signal)).to.equal(undefined);
        });
      } finally {
        await store.close();
      }
    });

    it("a forced pull's comparison whose hashing fails first is stopped, links nothing, and leaves the failure to the caller's check", async () => {
      const store = await new ContentStore(root).open();
      try {
        const bytes = content(13, 4096);
        const ingest = store.ingestPath();
        await writeFile(ingest, bytes);
        const good = async (path: string) => sha256(await readFile(path));
        const signal = new AbortController().signal;
        await store.withBlob(sha256(bytes), signal, () => commitContent(store, { path: ingest, sha256: sha256(bytes), sizeBytes: bytes.length }, good, signal, join(root, "first")));
        const failure = Object.assign(new Error("input/output error"), { code: "EIO" });
        let compareSettled = false;
        // left unhandled while the comparison runs, such a failure would end the server's process
        const unhandled: unknown[] = [];
        const onUnhandled = (reason: unknown) => unhandled.push(reason);
        process.on("unhandledRejection", onUnhandled);
        const outcome = await matchContent(
          store,
          sha256(bytes),
          bytes.length,
          () => Promise.reject(failure),
          signal,
          join(root, "second"),
          // the comparison ends a while after the hashing's failure stops it
          (_stored, s) =>
            new Promise<boolean>((resolve) =>
              s.addEventListener("abort", () =>
                setTimeout(() => {
                  compareSettled = true;
                  resolve(false);
                }, 50),
              ),
            ),
        ).finally(() => process.off("unhandledRejection", onUnhandled));
        expect(unhandled).to.deep.equal([]);
        expect(compareSettled).to.equal(true);
        expect(outcome?.linked).to.equal(false);
        // the caller, which downloads the file meanwhile, hears the failure from the check
        const told = await (outcome as { checked: Promise<unknown> }).checked.then(
          () => "resolved",
          (err: unknown) => err,
        );
        expect(told).to.equal(failure);
        expect(await readdir(root)).to.not.include("second");
      } finally {
        await store.close();
      }
    });

    it("leaves the hard-link probe of a server starting beside it alone when it clears the ingest dir", async () => {
      const store = await new ContentStore(root).open();
      try {
        const probe = join(store.ingestDir, `${PROBE_PREFIX}starting`);
        await writeFile(probe, "");
        const leftover = join(store.ingestDir, "an-earlier-version-ingest-file");
        await writeFile(leftover, "x");
        await clearIngest(store);
        expect(await readdir(store.ingestDir)).to.include(`${PROBE_PREFIX}starting`).and.not.include("an-earlier-version-ingest-file");
      } finally {
        await store.close();
      }
    });
  });

  describe("adoption of an earlier version's installs", () => {
    const suite = serverWithModel();

    it("condemns stored content it finds corrupt while adopting: the install holding it is UNHEALTHY, the adopted one healthy", async () => {
      const bytes = content(7, 256 * 1024);
      const dir = await suite.source({ "model.bin": bytes });
      await call(suite.t.client, "registerModel", { model: modelSpec({ name: "twin" }) });
      await pullOk(suite.t.client, { name: "minilm", fixtureDir: dir });
      await pullOk(suite.t.client, { name: "twin", fixtureDir: dir });
      // twin as an earlier version left it: a plain file; the content minilm shares with the store is written through
      const plain = join(suite.t.cacheRoot, "twin", "model.bin");
      await rm(plain);
      await writeFile(plain, bytes);
      await writeThrough(join(suite.t.cacheRoot, "minilm", "model.bin"));
      await suite.t.restart();
      // adoption runs once the server listens: SERVING says it is done
      await healthBecomes(suite.t.server.address, "SERVING");
      expect(await status(suite.t, "minilm")).to.equal(ModelStatus.MODEL_STATUS_UNHEALTHY);
      expect((await call(suite.t.client, "inspectCache", { name: "minilm", deep: false })).reason).to.equal(UnhealthyReason.UNHEALTHY_REASON_CHECKSUM_MISMATCH);
      expect((await call(suite.t.client, "inspectCache", { name: "twin", deep: true })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
      expect((await lstat(plain)).ino).to.equal((await lstat(join(suite.t.cacheRoot, ".blobs", "sha256", sha256(bytes)))).ino);
    });
  });

  describe("a server killed while it condemns content", () => {
    let dataDir: string;
    let source: Awaited<ReturnType<typeof makeSourceDir>>;
    beforeEach(async () => {
      dataDir = await mkdtemp(join(tmpdir(), "modelcache-condemn-"));
    });
    afterEach(async () => {
      await rm(dataDir, { recursive: true, force: true });
      await source?.cleanup();
    });

    it("comes back with every install that holds the content UNHEALTHY, and never links it again", async () => {
      const bytes = content(8, 256 * 1024);
      source = await makeSourceDir({ "model.bin": bytes });
      const cacheRoot = join(dataDir, "ai_models_cache");
      // no repair: a model installed from a directory would be pulled again from it, and the store hold good content anew
      let server = await spawnServer({ dataDir, args: ["--fixture-root", source.dir, "--min-free-bytes", "0", "--verify-interval", "1s", "--no-auto-repair"] });
      try {
        for (const name of ["minilm", "twin", "third"]) await call(server.client, "registerModel", { model: modelSpec({ name }) });
        await pullOk(server.client, { name: "minilm", fixtureDir: source.dir });
        await pullOk(server.client, { name: "twin", fixtureDir: source.dir });
        await writeThrough(join(cacheRoot, "minilm", "model.bin"));
        // killed as soon as the first mark shows: the quarantine may or may not have happened
        await eventually("a model marked", async () => (await call(server.client, "getModel", { name: "minilm" })).model!.status === ModelStatus.MODEL_STATUS_UNHEALTHY || (await call(server.client, "getModel", { name: "twin" })).model!.status === ModelStatus.MODEL_STATUS_UNHEALTHY);
        await server.kill();
        server = await spawnServer({ dataDir, args: ["--fixture-root", source.dir, "--min-free-bytes", "0"] });
        // killed between two marks, the content is still in the store, unknown to it: the next pull hashes it and condemns it again
        const events = await pullOk(server.client, { name: "third", fixtureDir: source.dir });
        expect(completedFiles(events)[0]!.reused).to.equal(false);
        for (const name of ["minilm", "twin"]) expect((await call(server.client, "getModel", { name })).model!.status, name).to.equal(ModelStatus.MODEL_STATUS_UNHEALTHY);
        expect(sha256(await readFile(join(cacheRoot, "third", "model.bin")))).to.equal(sha256(bytes));
        expect((await call(server.client, "inspectCache", { name: "third", deep: true })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
      } finally {
        await server.kill();
      }
    });
  });

  describe("deep InspectCache racing a change", () => {
    const suite = serverWithModel();

    /** Holds every hash of the deep inspection until the test lets it go; resolves `entered` at the first. */
    function holdHashes(t: TestServer) {
      const copier = t.server.runtime.copier;
      const original = copier.hash.bind(copier);
      let entered!: () => void;
      let release!: () => void;
      const gate = new Promise<void>((resolve) => (release = resolve));
      const reached = new Promise<void>((resolve) => (entered = resolve));
      copier.hash = async (path, signal) => {
        entered();
        await gate;
        return original(path, signal);
      };
      return { reached, release, restore: () => (copier.hash = original) };
    }

    it("answers MISSING when the install is dropped while it is hashed, never INTERNAL", async () => {
      const dir = await suite.source({ "model.bin": content(2, 64 * 1024), "config.json": "{}" });
      await pullOk(suite.t.client, { name: "minilm", fixtureDir: dir });
      const hold = holdHashes(suite.t);
      const inspecting = call(suite.t.client, "inspectCache", { name: "minilm", deep: true });
      await hold.reached;
      await call(suite.t.client, "dropCache", { name: "minilm", force: false });
      hold.release();
      const report = await inspecting;
      hold.restore();
      expect(report.status).to.equal(CacheStatus.CACHE_STATUS_MISSING);
      expect(await status(suite.t, "minilm")).to.equal(ModelStatus.MODEL_STATUS_REGISTERED);
    });

    it("answers from the new install when a pull replaces it while it is hashed", async () => {
      const dir = await suite.source({ "model.bin": content(3, 64 * 1024) });
      const next = await suite.source({ "model.bin": content(4, 64 * 1024), "extra.bin": "x" });
      await pullOk(suite.t.client, { name: "minilm", fixtureDir: dir });
      const hold = holdHashes(suite.t);
      const inspecting = call(suite.t.client, "inspectCache", { name: "minilm", deep: true });
      await hold.reached;
      hold.restore();
      await pullOk(suite.t.client, { name: "minilm", fixtureDir: next });
      hold.release();
      const report = await inspecting;
      expect(report.status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
      expect(report.manifest!.files.map((f) => f.path)).to.deep.equal(["extra.bin", "model.bin"]);
      expect(await status(suite.t, "minilm")).to.equal(ModelStatus.MODEL_STATUS_INSTALLED);
    });
  });

  describe("from a hub", () => {
    const REPO = "acme/trust";
    let hub: FakeHub;
    let t: TestServer;
    afterEach(async () => {
      await t.close();
      await hub.close();
    });
    const metric = async (name: string) => {
      const text = await (await fetch(`http://${t.server.metricsAddress}/metrics`)).text();
      return Number(new RegExp(`^${name.replace(/[{}"]/g, (c) => `\\${c}`)} (\\S+)$`, "m").exec(text)?.[1] ?? 0);
    };

    it("a forced pull hashes the stored copy again and replaces content rotten without a trace in its stat", async () => {
      const shard = content(5, 256 * 1024);
      hub = await FakeHub.serve(REPO, FIXTURE_DIR, { "shard.safetensors": shard });
      t = await startTestServer({ hubUrl: hub.url });
      await call(t.client, "registerModel", { model: modelSpec({ source: REPO }) });
      await pullOk(t.client, { name: "minilm" });
      const blob = join(t.cacheRoot, ".blobs", "sha256", sha256(shard));
      await writeThrough(blob);
      // bit rot changes no metadata: the store's record is made to match the rotten file's stat
      const store = t.server.runtime.store;
      const known = (await store.known.get(sha256(shard)))!;
      await store.known.put(sha256(shard), { ...known, signature: signatureOf(await lstat(blob, { bigint: true })) });
      expect((await call(t.client, "inspectCache", { name: "minilm", deep: false })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);

      await pullOk(t.client, { name: "minilm", force: true });
      expect(sha256(await readFile(join(t.cacheRoot, "minilm", "shard.safetensors")))).to.equal(sha256(shard));
      expect(sha256(await readFile(blob))).to.equal(sha256(shard));
      expect((await call(t.client, "inspectCache", { name: "minilm", deep: true })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
      expect(await status(t, "minilm")).to.equal(ModelStatus.MODEL_STATUS_INSTALLED);
    });

    it("a pull that linked content condemned before its promotion records its install UNHEALTHY, and auto-repair pulls it again after it ends", async () => {
      hub = await FakeHub.serve(REPO, FIXTURE_DIR);
      t = await startTestServer({ hubUrl: hub.url, metricsListen: "127.0.0.1:0", verifyIntervalMs: 20, autoRepair: true });
      await call(t.client, "registerModel", { model: modelSpec({ source: REPO }) });
      await call(t.client, "registerModel", { model: modelSpec({ name: "twin", source: REPO }) });
      await pullOk(t.client, { name: "minilm" });
      // the twin's pull links what minilm holds, then waits for a new file the test holds back
      hub.commitFile("extra.bin", "only in the new commit");
      let letGo!: () => void;
      hub.faults.hold.set("extra.bin", new Promise<void>((resolve) => (letGo = resolve)));
      let linked!: () => void;
      const configLinked = new Promise<void>((resolve) => (linked = resolve));
      const twinPull = pull(t.client, { name: "twin" }, { onEvent: (event) => event.fileCompleted?.path === "config.json" && linked() });
      await configLinked;
      await writeThrough(join(t.cacheRoot, "minilm", "config.json"));
      await eventually("the verification condemns the content", async () => (await status(t, "minilm")) === ModelStatus.MODEL_STATUS_UNHEALTHY);
      letGo();
      const outcome = await twinPull;
      expect(outcome.error).to.equal(undefined);
      await eventually("both models repaired", async () => (await metric('modelcache_repairs_total{result="ok"}')) >= 2);
      for (const name of ["minilm", "twin"]) {
        expect((await call(t.client, "inspectCache", { name, deep: true })).status, name).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
        expect(await status(t, name), name).to.equal(ModelStatus.MODEL_STATUS_INSTALLED);
      }
    });
  });

  describe("a cache root's filesystem", () => {
    const cleanups: (() => Promise<void>)[] = [];
    afterEach(async () => {
      for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
    });
    /** A small ext4 filesystem of its own, loop-mounted; unmounted after the test. */
    async function mountExt4(test: Mocha.Context): Promise<string> {
      if (process.getuid?.() !== 0) test.skip();
      const dir = await mkdtemp(join(tmpdir(), "modelcache-fs-"));
      cleanups.push(() => rm(dir, { recursive: true, force: true }));
      const image = join(dir, "image");
      const mnt = join(dir, "mnt");
      await mkdir(mnt);
      execFileSync("truncate", ["-s", "64M", image]);
      execFileSync("mkfs.ext4", ["-q", "-F", image]);
      execFileSync("mount", ["-o", "loop", image, mnt]);
      cleanups.push(async () => void execFileSync("umount", [mnt]));
      return mnt;
    }

    it("copies stored content at its filesystem's link limit (EMLINK) into the install instead of failing the pull", async function () {
      const mnt = await mountExt4(this);
      const bytes = content(6, 64 * 1024);
      const source = await makeSourceDir({ "model.bin": bytes });
      cleanups.push(source.cleanup);
      const t = await startTestServer({ cacheDir: join(mnt, "cache"), minFreeBytes: 0 });
      cleanups.push(() => t.close());
      await call(t.client, "registerModel", { model: modelSpec() });
      await call(t.client, "registerModel", { model: modelSpec({ name: "twin" }) });
      await pullOk(t.client, { name: "minilm", fixtureDir: source.dir });
      // other names for the blob until ext4 allows no more (65000 links)
      const blob = join(mnt, "cache", ".blobs", "sha256", sha256(bytes));
      await mkdir(join(mnt, "links"));
      for (let i = 0; ; i += 1) {
        const failed = await link(blob, join(mnt, "links", String(i))).then(
          () => undefined,
          (err: NodeJS.ErrnoException) => err.code,
        );
        if (failed === "EMLINK") break;
        expect(failed).to.equal(undefined);
      }
      const events = await pullOk(t.client, { name: "twin", fixtureDir: source.dir });
      expect(completedFiles(events)[0]!.path).to.equal("model.bin");
      const copy = await lstat(join(mnt, "cache", "twin", "model.bin"));
      expect(copy.ino).to.not.equal((await lstat(blob)).ino);
      expect(copy.nlink).to.equal(1);
      expect(copy.mode & 0o777).to.equal(0o444);
      expect(sha256(await readFile(join(mnt, "cache", "twin", "model.bin")))).to.equal(sha256(bytes));
      expect((await call(t.client, "inspectCache", { name: "twin", deep: true })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
      expect(await status(t, "twin")).to.equal(ModelStatus.MODEL_STATUS_INSTALLED);
    });

    it("refuses to start on a filesystem without hard links, naming it and --cache-dir: INVALID_ARGUMENT in process, exit 2 from the CLI", async function () {
      if (process.getuid?.() !== 0) this.skip();
      const dataDir = await mkdtemp(join(tmpdir(), "modelcache-nolinks-"));
      cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
      // mqueue is a real filesystem whose link(2) answers EPERM, as vfat's does; mounted where the store probes
      const ingest = join(dataDir, "ai_models_cache", ".blobs", "ingest");
      await mkdir(ingest, { recursive: true });
      execFileSync("mount", ["-t", "mqueue", "none", ingest]);
      cleanups.push(async () => void execFileSync("umount", [ingest]));

      const error = await startTestServerIn(dataDir).catch((err: unknown) => err);
      expect(error).to.be.instanceOf(ModelCacheError);
      expect((error as ModelCacheError).kind).to.equal("invalid_argument");
      expect((error as ModelCacheError).message)
        .to.include(`mqueue mounted at '${ingest}'`)
        .and.include(`'${join(dataDir, "ai_models_cache")}'`)
        .and.include("without hard links")
        .and.include("--cache-dir");
      // the probe leaves nothing behind
      expect(await readdir(ingest)).to.deep.equal([]);

      const run = await runCli("", ["serve", "--listen", "127.0.0.1:0", "--data-dir", dataDir, "--log-format", "json"]);
      expect(run.code).to.equal(2);
      expect(run.stdout + run.stderr).to.include("without hard links").and.include("mqueue");
    });
  });
});
