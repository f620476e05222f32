import { randomBytes } from "node:crypto";
import { linkSync } from "node:fs";
import { lstat, mkdir, mkdtemp, readFile, readdir, rename, rm, stat, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Metadata, type ServiceError, credentials, status } from "@grpc/grpc-js";
import { expect } from "chai";
import { pino } from "pino";
import { startServer } from "../src/server/start-server.js";
import { CacheStatus, ModelCacheServiceClient, ModelStatus, type PullResponse, UnhealthyReason } from "../generated/modelcache/v1/model_cache.js";
import { FakeHub } from "./support/fake-hub.js";
import { captureLogs } from "./support/log-capture.js";
import { spawnServer } from "./support/child-server.js";
import { makeSourceDir, sha256, snapshot } from "./support/source-dir.js";
import { FIXTURE_DIR, type TestServer, call, callError, kindOf, modelSpec, pull, pullError, pullOk, startTestServer } from "./support/test-server.js";

const BIG = 64 * 1024 * 1024;
const completedOf = (events: PullResponse[]) => events.at(-1)?.completed;

describe("pull jobs", () => {
  // a hub that serves the model slowly (about half a second), so that a job
  // is surely still running when a test acts on it
  let hub: FakeHub;
  let t: TestServer;
  let dir: string;
  let cleanup: () => Promise<void>;
  beforeEach(async () => {
    ({ dir, cleanup } = await makeSourceDir({ "a.bin": Buffer.alloc(8 * 1024 * 1024, 5), "b.json": "{}" }));
    hub = await FakeHub.serve("acme/slow", dir);
    hub.faults.bytesPerSecond = 16 * 1024 * 1024;
    t = await startTestServer({ hubUrl: hub.url });
    await call(t.client, "registerModel", { model: modelSpec({ source: "acme/slow" }) });
  });
  afterEach(async () => {
    await t.close();
    await hub.close();
    await cleanup();
  });
  const slowSource = () => `hub:acme/slow@${hub.commit}`;

  it("attaches a second Pull to the running job: started again with its totals, then the same result", async () => {
    let second: ReturnType<typeof pull> | undefined;
    const first = pull(t.client, { name: "minilm" }, {
      onEvent: (event) => {
        // the second client names no source at all: it joins the job instead of starting one
        if (event.fileStarted) second ??= pull(t.client, { name: "minilm" });
      },
    });
    const [a, b] = [await first, await second!];
    expect(a.error).to.equal(undefined);
    expect(b.error).to.equal(undefined);
    expect(b.events[0]!.started).to.deep.equal(a.events[0]!.started);
    expect(completedOf(b.events)).to.deep.equal(completedOf(a.events));
    for (const path of ["a.bin", "b.json"]) {
      const kinds = b.events.filter((e) => (e.fileStarted ?? e.fileProgress ?? e.fileCompleted)?.path === path).map(kindOf);
      expect(kinds[0], path).to.equal("fileStarted");
      expect(kinds.at(-1), path).to.equal("fileCompleted");
    }
  });

  it("refuses force on a running job with ABORTED naming it, and the job goes on", async () => {
    let forced: Promise<Awaited<ReturnType<typeof pull>>> | undefined;
    const first = pull(t.client, { name: "minilm" }, {
      onEvent: (event) => {
        if (event.fileStarted) forced ??= pull(t.client, { name: "minilm", force: true });
      },
    });
    expect(completedOf((await first).events)?.status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
    const refused = await forced!;
    expect(refused.error?.code).to.equal(status.ABORTED);
    expect(refused.error?.details).to.include("already").and.include(slowSource());
  });

  it("queues pulls beyond --max-concurrent-pulls, telling them their place, and runs them in order", async () => {
    await t.restart({ maxConcurrentPulls: 1 });
    await call(t.client, "registerModel", { model: modelSpec({ name: "second" }) });
    await call(t.client, "registerModel", { model: modelSpec({ name: "third" }) });
    const later: ReturnType<typeof pull>[] = [];
    const first = pull(t.client, { name: "minilm" }, {
      onEvent: (event) => {
        if (event.fileStarted && later.length === 0) {
          later.push(
            pull(t.client, { name: "second", fixtureDir: FIXTURE_DIR }, {
              onEvent: (e) => {
                if (e.queued && later.length === 1) later.push(pull(t.client, { name: "third", fixtureDir: FIXTURE_DIR }));
              },
            }),
          );
        }
      },
    });
    await first;
    const second = await later[0]!;
    const third = await later[1]!;
    expect(second!.events[0]!.queued).to.deep.equal({ position: 1, running: 1 });
    expect(third!.events[0]!.queued!.position).to.equal(2);
    for (const outcome of [second!, third!]) {
      const kinds = outcome.events.map(kindOf);
      expect(kinds.indexOf("queued")).to.be.below(kinds.indexOf("started"));
      expect(completedOf(outcome.events)?.status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
    }
    expect(third!.events.filter((e) => e.queued).map((e) => e.queued!.position)).to.deep.equal([2, 1]);
  });

  it("cancels the job when its last client cancels: staging removed, previous install kept", async () => {
    await pullOk(t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
    const before = await snapshot(join(t.cacheRoot, "minilm"));
    const outcome = await pull(t.client, { name: "minilm" }, {
      onEvent: (event, stream) => {
        if (event.fileProgress) stream.cancel();
      },
    });
    expect(outcome.error?.code).to.equal(status.CANCELLED);
    await t.server.runtime.pulls.find("minilm")?.done;
    expect(t.server.runtime.pulls.find("minilm")).to.equal(undefined);
    expect(await readdir(join(t.cacheRoot, ".staging"))).to.deep.equal([]);
    expect(await snapshot(join(t.cacheRoot, "minilm"))).to.deep.equal(before);
  });

  it("keeps the job running while one of two clients cancels", async () => {
    let second: ReturnType<typeof pull> | undefined;
    const first = pull(t.client, { name: "minilm" }, {
      onEvent: (event, stream) => {
        if (event.fileStarted && !second) {
          second = pull(t.client, { name: "minilm" }, { onEvent: (e) => e.started && stream.cancel() });
        }
      },
    });
    expect((await first).error?.code).to.equal(status.CANCELLED);
    expect(completedOf((await second!).events)?.status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
  });

  it("keeps a detached job running with no client, and a later Pull attaches to it", async () => {
    const first = await pull(t.client, { name: "minilm", detach: true }, {
      onEvent: (event, stream) => {
        if (event.fileStarted) stream.cancel();
      },
    });
    expect(first.error?.code).to.equal(status.CANCELLED);
    const job = t.server.runtime.pulls.find("minilm");
    expect(job, "the job outlives its only client").to.not.equal(undefined);
    const later = await pull(t.client, { name: "minilm" });
    expect(later.events[0]!.started!.source).to.equal(slowSource());
    expect(completedOf(later.events)?.status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
    await job!.done;
    expect((await call(t.client, "inspectCache", { name: "minilm", deep: true })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
  });

  it("drops one model while another model's pull holds its lock, and both end well", async () => {
    await call(t.client, "registerModel", { model: modelSpec({ name: "other" }) });
    await pullOk(t.client, { name: "other", fixtureDir: FIXTURE_DIR });
    let drop: Promise<unknown> | undefined;
    const pulling = pull(t.client, { name: "minilm" }, {
      onEvent: (event) => {
        if (event.fileStarted) drop ??= call(t.client, "dropCache", { name: "other", force: false });
      },
    });
    expect(completedOf((await pulling).events)?.status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
    expect(await drop).to.include({ removed: true });
    // both locks were released cleanly: each model can be changed again
    expect(await call(t.client, "dropCache", { name: "minilm", force: false })).to.include({ removed: true });
    await pullOk(t.client, { name: "other", fixtureDir: FIXTURE_DIR });
    expect((await call(t.client, "inspectCache", { name: "other", deep: true })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
  });

  it("refuses DropCache while a pull runs, naming the pull and how to cancel it, and the pull completes", async () => {
    let drop: Promise<ServiceError> | undefined;
    const pulling = pull(t.client, { name: "minilm" }, {
      onEvent: (event) => {
        if (event.fileStarted) drop ??= callError(t.client, "dropCache", { name: "minilm", force: false });
      },
    });
    expect(completedOf((await pulling).events)?.status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
    const refused = await drop!;
    expect(refused.code).to.equal(status.FAILED_PRECONDITION);
    expect(refused.details).to.include("running").and.include(slowSource()).and.include("cancel");
    expect((await call(t.client, "inspectCache", { name: "minilm", deep: true })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
  });

  it("takes a DropCache sent as soon as InspectCache shows the pulled install: it waits for the pull to record it, then removes it", async () => {
    // the install shows from its move into place; the pull then records it (a synced registry write) and ends
    for (let round = 0; round < 3; round += 1) {
      const pulling = pull(t.client, { name: "minilm", fixtureDir: FIXTURE_DIR, detach: true });
      while ((await call(t.client, "inspectCache", { name: "minilm", deep: false })).status !== CacheStatus.CACHE_STATUS_INSTALLED);
      expect(await call(t.client, "dropCache", { name: "minilm", force: false }), `round ${round}`).to.include({ removed: true });
      expect((await pulling).error).to.equal(undefined);
      expect((await call(t.client, "inspectCache", { name: "minilm", deep: false })).status).to.equal(CacheStatus.CACHE_STATUS_MISSING);
      expect((await call(t.client, "getModel", { name: "minilm" })).model!.status).to.equal(ModelStatus.MODEL_STATUS_REGISTERED);
    }
  });

  it("refuses UnregisterModel while the model's pull is queued, and the pull then installs a model still registered", async () => {
    await t.restart({ maxConcurrentPulls: 1 });
    await call(t.client, "registerModel", { model: modelSpec({ name: "second" }) });
    let queued: ReturnType<typeof pull> | undefined;
    let unregister: Promise<ServiceError> | undefined;
    const first = pull(t.client, { name: "minilm" }, {
      onEvent: (event) => {
        if (event.fileStarted) {
          queued ??= pull(t.client, { name: "second", fixtureDir: FIXTURE_DIR }, {
            onEvent: (e) => {
              if (e.queued) unregister ??= callError(t.client, "unregisterModel", { name: "second", dropCache: true });
            },
          });
        }
      },
    });
    await first;
    const refused = await unregister!;
    expect(refused.code).to.equal(status.FAILED_PRECONDITION);
    expect(refused.details).to.include("queued").and.include("UnregisterModel");
    expect(completedOf((await queued!).events)?.status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
    expect((await call(t.client, "getModel", { name: "second" })).model!.status).to.equal(ModelStatus.MODEL_STATUS_INSTALLED);
  });

  it("a pull whose model was unregistered while it waited for the model's lock installs nothing", async () => {
    // an UnregisterModel that checked for pulls before this one was asked for, and holds the lock
    const release = await t.server.runtime.locks.acquire("minilm", undefined);
    const pulling = pullError(t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
    while (!t.server.runtime.pulls.find("minilm")) await new Promise((resolve) => setImmediate(resolve));
    await t.server.runtime.registry.models.del("minilm");
    await release();
    const { error } = await pulling;
    expect(error.code).to.equal(status.NOT_FOUND);
    expect(error.details).to.include("unregistered while its pull waited");
    expect(await readdir(t.cacheRoot)).to.not.include("minilm");
  });

  it("makes a queued pull force when a client asks for force, instead of dropping the request", async () => {
    await t.restart({ maxConcurrentPulls: 1 });
    await call(t.client, "registerModel", { model: modelSpec({ name: "second" }) });
    await pullOk(t.client, { name: "second", fixtureDir: FIXTURE_DIR });
    const later: ReturnType<typeof pull>[] = [];
    // whether the job that ran was forced, seen as it started
    let forcedWhenStarted: boolean | undefined;
    const first = pull(t.client, { name: "minilm" }, {
      onEvent: (event) => {
        if (event.fileStarted && later.length === 0) {
          later.push(
            pull(t.client, { name: "second", fixtureDir: FIXTURE_DIR }, {
              onEvent: (e) => {
                if (e.queued && later.length === 1) later.push(pull(t.client, { name: "second", fixtureDir: FIXTURE_DIR, force: true }));
                if (e.started) forcedWhenStarted = t.server.runtime.pulls.find("second")?.force;
              },
            }),
          );
        }
      },
    });
    await first;
    for (const outcome of [await later[0]!, await later[1]!]) {
      expect(outcome.error).to.equal(undefined);
      expect(completedOf(outcome.events)?.status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
    }
    expect(forcedWhenStarted, "the running job was made to force").to.equal(true);
  });

  it("refuses a Pull naming a fixture_dir other than the running pull's source, naming that source", async () => {
    let other: ReturnType<typeof pullError> | undefined;
    const first = pull(t.client, { name: "minilm" }, {
      onEvent: (event) => {
        if (event.fileStarted) other ??= pullError(t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
      },
    });
    expect(completedOf((await first).events)?.status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
    const { error } = await other!;
    expect(error.code).to.equal(status.FAILED_PRECONDITION);
    expect(error.details).to.include(slowSource()).and.include("fixture_dir");
    const manifest = JSON.parse(await readFile(join(t.cacheRoot, "minilm", "manifest.json"), "utf8"));
    expect(manifest.files.map((f: { path: string }) => f.path)).to.deep.equal(["a.bin", "b.json"]);
  });

  it("attaches a Pull naming the same fixture_dir as the running pull", async () => {
    let second: ReturnType<typeof pull> | undefined;
    const first = pull(t.client, { name: "minilm", fixtureDir: dir }, {
      onEvent: (event) => {
        if (event.fileStarted) second ??= pull(t.client, { name: "minilm", fixtureDir: dir });
      },
    });
    const [a, b] = [await first, await second!];
    expect(b.error).to.equal(undefined);
    expect(completedOf(b.events)).to.deep.equal(completedOf(a.events));
  });
});

describe("the registry checked against the disk at startup", () => {
  let t: TestServer;
  beforeEach(async () => {
    t = await startTestServer();
    await call(t.client, "registerModel", { model: modelSpec() });
    await pullOk(t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
    await t.server.close();
  });
  afterEach(() => t.close());

  it("reports a model whose install vanished as REGISTERED", async () => {
    await rm(join(t.cacheRoot, "minilm"), { recursive: true });
    await t.restart();
    const { model } = await call(t.client, "getModel", { name: "minilm" });
    expect(model).to.include({ status: ModelStatus.MODEL_STATUS_REGISTERED, cacheDir: "", cacheSizeBytes: 0 });
  });

  it("reports a model whose install is unhealthy as UNHEALTHY until it is pulled again", async () => {
    await writeFile(join(t.cacheRoot, "minilm", "manifest.json"), "{");
    await t.restart();
    expect((await call(t.client, "getModel", { name: "minilm" })).model!.status).to.equal(ModelStatus.MODEL_STATUS_UNHEALTHY);
    expect((await callError(t.client, "unregisterModel", { name: "minilm", dropCache: false })).code).to.equal(status.FAILED_PRECONDITION);
    await pullOk(t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
    expect((await call(t.client, "getModel", { name: "minilm" })).model!.status).to.equal(ModelStatus.MODEL_STATUS_INSTALLED);
  });
});

describe("crash safety", () => {
  it("after SIGKILL in the middle of a pull, a restart shows the old install whole and .staging clean", async () => {
    const t = await startTestServer();
    const source = await makeSourceDir({ "a.bin": Buffer.alloc(BIG, 6), "b.bin": Buffer.alloc(BIG, 7), "c.json": "{}" });
    try {
      await call(t.client, "registerModel", { model: modelSpec() });
      await pullOk(t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
      const before = await snapshot(join(t.cacheRoot, "minilm"));
      await t.server.close();

      const child = await spawnServer({ dataDir: t.dataDir });
      try {
        const outcome = await pull(child.client, { name: "minilm", fixtureDir: source.dir }, {
          onEvent: (event) => {
            if (event.fileProgress) void child.kill();
          },
        });
        expect(outcome.error?.code).to.equal(status.UNAVAILABLE);
      } finally {
        await child.kill();
      }
      expect((await readdir(join(t.cacheRoot, ".staging"))).length, "the crash left work in .staging").to.be.above(0);

      const logs = captureLogs();
      await t.restart({ logger: logs.logger });
      // the killed server's lock is taken over at once, not after it goes stale
      expect(logs.lines.filter((l) => l.model === "minilm").map((l) => l.msg)).to.deep.equal(["took over a model lock whose holder is gone"]);
      expect(await readdir(join(t.cacheRoot, ".staging"))).to.deep.equal([]);
      expect(await snapshot(join(t.cacheRoot, "minilm"))).to.deep.equal(before);
      const report = await call(t.client, "inspectCache", { name: "minilm", deep: true });
      expect(report.status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
      expect((await call(t.client, "getModel", { name: "minilm" })).model!.status).to.equal(ModelStatus.MODEL_STATUS_INSTALLED);
    } finally {
      await source.cleanup();
      await t.close();
    }
  });
});

describe("two servers sharing one cache root", () => {
  it("a condemnation by one server reaches the other server's installs holding that content when it next starts", async () => {
    const bytes = Buffer.alloc(256 * 1024, 7);
    bytes.write("shared weights");
    const made = await makeSourceDir({ "model.bin": bytes, "config.json": "{}" });
    const a = await startTestServer();
    const b = await startTestServer({ cacheDir: a.cacheRoot });
    try {
      for (const name of ["minilm", "twin"]) await call(a.client, "registerModel", { model: modelSpec({ name }) });
      await call(b.client, "registerModel", { model: modelSpec({ name: "other" }) });
      await pullOk(a.client, { name: "minilm", fixtureDir: made.dir });
      // b installs a model of its own from the same files, linking the content a stored
      await pullOk(b.client, { name: "other", fixtureDir: made.dir });
      const blob = join(a.cacheRoot, ".blobs", "sha256", sha256(bytes));
      const before = await stat(blob);
      const rotten = Buffer.from(bytes);
      rotten[3] ^= 0xff;
      await writeFile(blob, rotten);
      await utimes(blob, before.atime, before.mtime);
      // a finds it corrupt when it pulls another model with that content, and quarantines it
      await pullOk(a.client, { name: "twin", fixtureDir: made.dir });
      expect((await call(a.client, "getModel", { name: "minilm" })).model!.status).to.equal(ModelStatus.MODEL_STATUS_UNHEALTHY);
      expect((await call(b.client, "getModel", { name: "other" })).model!.status, "b has not looked yet").to.equal(ModelStatus.MODEL_STATUS_INSTALLED);
      await b.restart();
      expect((await call(b.client, "getModel", { name: "other" })).model!.status).to.equal(ModelStatus.MODEL_STATUS_UNHEALTHY);
      expect((await call(b.client, "inspectCache", { name: "other", deep: false })).reason).to.equal(UnhealthyReason.UNHEALTHY_REASON_CHECKSUM_MISMATCH);
    } finally {
      await b.close();
      await a.close();
      await made.cleanup();
    }
  });

  it("a server starting while another's hub download is in progress leaves its resumable download alone", async () => {
    const made = await makeSourceDir({ "a.bin": Buffer.alloc(8 * 1024 * 1024, 3), "b.json": "{}" });
    const hub = await FakeHub.serve("acme/slow", made.dir);
    hub.faults.bytesPerSecond = 16 * 1024 * 1024;
    const a = await startTestServer({ hubUrl: hub.url });
    let b: Awaited<ReturnType<typeof startServer>> | undefined;
    try {
      await call(a.client, "registerModel", { model: modelSpec({ source: "acme/slow" }) });
      let starting: Promise<void> | undefined;
      const first = pull(a.client, { name: "minilm" }, {
        onEvent: (event) => {
          if (event.fileProgress && event.fileProgress.path === "a.bin") {
            // the other server's registry has never heard of 'minilm'
            starting ??= startServer({ listen: "127.0.0.1:0", dataDir: join(a.dataDir, "other"), cacheDir: a.cacheRoot, offline: true, logger: pino({ level: "silent" }) }).then((started) => {
              b = started;
            });
          }
        },
      });
      const outcome = await first;
      await starting;
      expect(b, "the second server started during the download").to.not.equal(undefined);
      expect(outcome.error).to.equal(undefined);
      expect(completedOf(outcome.events)?.status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
      expect((await call(a.client, "inspectCache", { name: "minilm", deep: true })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
    } finally {
      await b?.close();
      await a.close();
      await hub.close();
      await made.cleanup();
    }
  });

  it("a DropCache waiting for another server's pull of the model gives up when its deadline passes", async () => {
    const a = await startTestServer();
    const b = await startServer({ listen: "127.0.0.1:0", dataDir: join(a.dataDir, "other"), cacheDir: a.cacheRoot, logger: pino({ level: "silent" }) });
    const bClient = new ModelCacheServiceClient(b.address, credentials.createInsecure());
    const source = await makeSourceDir({ "a.bin": Buffer.alloc(BIG, 9) });
    try {
      for (const client of [a.client, bClient]) await call(client, "registerModel", { model: modelSpec() });
      let drop: Promise<number | undefined> | undefined;
      const pulling = pull(a.client, { name: "minilm", fixtureDir: source.dir }, {
        onEvent: (event) => {
          if (event.fileStarted) {
            drop ??= new Promise((resolve) => bClient.dropCache({ name: "minilm", force: false }, new Metadata(), { deadline: Date.now() + 100 }, (err) => resolve(err?.code)));
          }
        },
      });
      expect(completedOf((await pulling).events)?.status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
      expect(await drop).to.equal(status.DEADLINE_EXCEEDED);
      expect((await call(a.client, "inspectCache", { name: "minilm", deep: true })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
    } finally {
      bClient.close();
      await b.close();
      await source.cleanup();
      await a.close();
    }
  });

  /** Wraps one method of a server's file copier so that the test decides when a call on `path` returns: the call is made, then held. */
  function holdCopier(server: TestServer, method: "hash" | "copy", held: (path: string) => boolean, when: "before" | "after" = "after"): { reached: Promise<void>; letGo: () => void } {
    const copier = server.server.runtime.copier;
    const real = copier[method].bind(copier) as (...args: unknown[]) => Promise<string>;
    let reached!: () => void;
    let letGo!: () => void;
    const gate = new Promise<void>((resolve) => (letGo = resolve));
    const hold = { reached: new Promise<void>((resolve) => (reached = resolve)), letGo };
    (copier as unknown as Record<string, unknown>)[method] = async (...args: unknown[]) => {
      // hash(path, signal) reads path; copy(from, to, ...) writes to
      const hit = held(String(args[method === "hash" ? 0 : 1]));
      const wait = async () => {
        reached();
        await gate;
      };
      if (hit && when === "before") await wait();
      const result = await real(...args);
      if (hit && when === "after") await wait();
      return result;
    };
    return hold;
  }

  for (const [when, moment] of [["after", "between another's check of stored content and its link"], ["before", "while another is about to hash stored content"]] as const) {
    it(`a PruneCache by one server ${moment}: the content is found gone, and fetched again`, async () => {
      // bytes that do not compress to nothing
      const weights = randomBytes(256 * 1024);
      const hub = await FakeHub.serve("acme/tiny", FIXTURE_DIR, { "weights.safetensors": weights });
      const a = await startTestServer({ hubUrl: hub.url });
      const b = await startServer({ listen: "127.0.0.1:0", dataDir: join(a.dataDir, "other"), cacheDir: a.cacheRoot, offline: true, logger: pino({ level: "silent" }) });
      const bClient = new ModelCacheServiceClient(b.address, credentials.createInsecure());
      let hold: ReturnType<typeof holdCopier> | undefined;
      try {
        // content nothing references, as a crash or a failed pull leaves it: b's PruneCache collects it
        const blob = join(a.cacheRoot, ".blobs", "sha256", sha256(weights));
        await writeFile(blob, weights, { mode: 0o444 });
        // a has never seen it: it hashes it before linking it, and is held just before or after
        hold = holdCopier(a, "hash", (path) => path === blob, when);
        await call(a.client, "registerModel", { model: modelSpec({ source: "acme/tiny" }) });
        const pulling = pull(a.client, { name: "minilm" });
        await hold.reached;
        expect(await call(bClient, "pruneCache", { dryRun: false })).to.include({ blobsRemoved: 1, freedBytes: weights.length });
        hold.letGo();
        const outcome = await pulling;
        expect(outcome.error).to.equal(undefined);
        expect(outcome.events.find((e) => e.fileCompleted?.path === "weights.safetensors")!.fileCompleted!.reused).to.equal(false);
        expect(hub.contentRequests("weights.safetensors")).to.have.length.greaterThan(0);
        expect((await call(a.client, "inspectCache", { name: "minilm", deep: true })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
        expect((await lstat(join(a.cacheRoot, "minilm", "weights.safetensors"))).ino).to.equal((await lstat(blob)).ino);
      } finally {
        hold?.letGo();
        bClient.close();
        await b.close();
        await a.close();
        await hub.close();
      }
    });
  }

  it("a PruneCache that finds content unreferenced, then linked by another server before it removes it, leaves it stored", async () => {
    const t = await startTestServer();
    try {
      const bytes = randomBytes(64 * 1024);
      const blob = join(t.cacheRoot, ".blobs", "sha256", sha256(bytes));
      await writeFile(blob, bytes, { mode: 0o444 });
      // the other server's pull links it right after this one saw it unreferenced, before it moves it aside
      const store = t.server.runtime.store;
      const ingestPath = store.ingestPath.bind(store);
      await mkdir(join(t.cacheRoot, "other"));
      const linked = join(t.cacheRoot, "other", "install.bin");
      store.ingestPath = (prefix?: string) => {
        if (prefix?.startsWith("collect-")) linkSync(blob, linked);
        return ingestPath(prefix);
      };
      expect(await call(t.client, "pruneCache", { dryRun: false })).to.include({ blobsRemoved: 0, freedBytes: 0 });
      expect((await lstat(blob)).ino).to.equal((await lstat(linked)).ino);
      expect((await lstat(blob)).nlink).to.equal(2);
      expect(await readdir(store.ingestArea)).to.deep.equal([]);
    } finally {
      await t.close();
    }
  });

  it("a PruneCache by one server leaves alone the ingest file another server's pull is writing, and the pull installs", async () => {
    const a = await startTestServer();
    const b = await startServer({ listen: "127.0.0.1:0", dataDir: join(a.dataDir, "other"), cacheDir: a.cacheRoot, offline: true, logger: pino({ level: "silent" }) });
    const bClient = new ModelCacheServiceClient(b.address, credentials.createInsecure());
    const source = await makeSourceDir({ "a.bin": Buffer.alloc(1024 * 1024, 4) });
    let hold: ReturnType<typeof holdCopier> | undefined;
    try {
      // a's copy into its ingest area is written, and held before it enters the store
      hold = holdCopier(a, "copy", () => true);
      await call(a.client, "registerModel", { model: modelSpec() });
      const pulling = pull(a.client, { name: "minilm", fixtureDir: source.dir });
      await hold.reached;
      expect(await call(bClient, "pruneCache", { dryRun: false })).to.include({ freedBytes: 0, blobsRemoved: 0 });
      hold.letGo();
      const outcome = await pulling;
      expect(outcome.error).to.equal(undefined);
      expect((await call(a.client, "inspectCache", { name: "minilm", deep: true })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
    } finally {
      hold?.letGo();
      bClient.close();
      await b.close();
      await source.cleanup();
      await a.close();
    }
  });

  it("a SIGKILLed server's ingest area is cleared at the next start, and content it was moving aside to collect keeps its store name", async function () {
    this.timeout(60_000);
    const work = await mkdtemp(join(tmpdir(), "modelcache-ingest-"));
    const dataDir = join(work, "data");
    const root = join(dataDir, "ai_models_cache");
    const source = await makeSourceDir({ "a.bin": Buffer.alloc(64 * 1024, 6), "b.json": '{"b":1}' });
    let server = await spawnServer({ dataDir });
    try {
      await call(server.client, "registerModel", { model: modelSpec() });
      await pullOk(server.client, { name: "minilm", fixtureDir: source.dir });
      const [area] = await readdir(join(root, ".blobs", "ingest"));
      await server.kill();
      // what the kill could have left in its area: a copy half written, and a blob moved aside to be
      // collected just after another server linked it
      const blob = join(root, ".blobs", "sha256", sha256(Buffer.alloc(64 * 1024, 6)));
      await writeFile(join(root, ".blobs", "ingest", area!, "0123456789abcdef01234567"), "half a copy");
      await rename(blob, join(root, ".blobs", "ingest", area!, `collect-${sha256(Buffer.alloc(64 * 1024, 6))}.0123456789abcdef01234567`));
      server = await spawnServer({ dataDir });
      const areas = await readdir(join(root, ".blobs", "ingest"));
      expect(areas).to.have.length(1).and.not.include(area);
      expect(await readdir(join(root, ".blobs", "ingest", areas[0]!))).to.deep.equal([]);
      expect((await readdir(join(root, ".locks"))).filter((name) => name.includes(area!))).to.deep.equal([]);
      expect((await lstat(join(root, "minilm", "a.bin"))).ino).to.equal((await lstat(blob)).ino);
      await call(server.client, "registerModel", { model: modelSpec({ name: "twin" }) });
      const events = await pullOk(server.client, { name: "twin", fixtureDir: source.dir });
      expect(events.filter((e) => e.fileCompleted).map((e) => e.fileCompleted!.reused)).to.deep.equal([true, true]);
      expect((await call(server.client, "inspectCache", { name: "minilm", deep: true })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
    } finally {
      await server.kill();
      await source.cleanup();
      await rm(work, { recursive: true, force: true });
    }
  });

  it("never interleave changes to one model: the second pull waits for the first", async () => {
    const a = await startTestServer();
    const b = await startServer({ listen: "127.0.0.1:0", dataDir: join(a.dataDir, "other"), cacheDir: a.cacheRoot, logger: pino({ level: "silent" }) });
    const bClient = new ModelCacheServiceClient(b.address, credentials.createInsecure());
    const source = await makeSourceDir({ "a.bin": Buffer.alloc(BIG, 8) });
    try {
      for (const client of [a.client, bClient]) await call(client, "registerModel", { model: modelSpec() });
      let second: ReturnType<typeof pull> | undefined;
      const first = pull(a.client, { name: "minilm", fixtureDir: source.dir }, {
        onEvent: (event) => {
          if (event.fileStarted) second ??= pull(bClient, { name: "minilm", fixtureDir: FIXTURE_DIR });
        },
      });
      const [one, two] = [await first, await second!];
      expect(one.error).to.equal(undefined);
      expect(two.error).to.equal(undefined);
      // b's pull, which waited for a's, is the one on disk
      const manifest = JSON.parse(await readFile(join(a.cacheRoot, "minilm", "manifest.json"), "utf8"));
      expect(manifest.files).to.have.length(4);
      expect((await call(a.client, "inspectCache", { name: "minilm", deep: true })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
    } finally {
      bClient.close();
      await b.close();
      await source.cleanup();
      await a.close();
    }
  });
});
