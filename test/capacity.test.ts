import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readdir, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import { expect } from "chai";
import { ModelStatus, PullPolicy } from "../generated/modelcache/v1/model_cache.js";
import type { ServerOptions } from "../src/server/start-server.js";
import { pruneCache } from "../src/maintenance/prune-cache.js";
import { FakeHub } from "./support/fake-hub.js";
import { captureLogs } from "./support/log-capture.js";
import { runCli } from "./support/run-cli.js";
import { makeSourceDir, sha256 } from "./support/source-dir.js";
import { type TestServer, call, modelSpec, pull, pullOk, startTestServer } from "./support/test-server.js";

const FILE_BYTES = 100_000;

describe("capacity", () => {
  let t: TestServer;
  const sources = new Map<string, string>();
  const cleanups: (() => Promise<void>)[] = [];

  async function start(options: Partial<ServerOptions>, content: (name: string) => Buffer = () => randomBytes(FILE_BYTES)): Promise<void> {
    t = await startTestServer({ metricsListen: "127.0.0.1:0", ...options });
    cleanups.push(() => t.close());
    for (const name of ["a", "b", "c"]) {
      await call(t.client, "registerModel", { model: modelSpec({ name }) });
      const made = await makeSourceDir({ "config.json": `{"model":"${name}"}`, "model.safetensors": content(name) });
      cleanups.push(made.cleanup);
      sources.set(name, made.dir);
    }
  }
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  const pullModel = (name: string) => pullOk(t.client, { name, fixtureDir: sources.get(name)! });
  const status_ = async (name: string) => (await call(t.client, "getModel", { name })).model!.status;
  const blobs = () => readdir(join(t.cacheRoot, ".blobs", "sha256"), { withFileTypes: true }).then((entries) => entries.filter((e) => e.isFile()).length);
  const evictions = async (reason: string) => {
    const text = await (await fetch(`http://${t.server.metricsAddress}/metrics`)).text();
    return Number(new RegExp(`^modelcache_evictions_total\\{reason="${reason}"\\} (\\d+)$`, "m").exec(text)?.[1] ?? 0);
  };
  // two installs fit, three do not
  const QUOTA = 2.5 * FILE_BYTES;

  it("evicts the least recently used install to make room, keeping its registration", async () => {
    await start({ cacheMaxBytes: QUOTA });
    await pullModel("a");
    await pullModel("b");
    // a is used after b: b is now the least recently used
    await call(t.client, "resolveModel", { name: "a", pullPolicy: PullPolicy.PULL_POLICY_NEVER, leaseSeconds: 0, credentialAlias: "" });
    await pullModel("c");
    expect(await status_("b")).to.equal(ModelStatus.MODEL_STATUS_REGISTERED);
    expect(await status_("a")).to.equal(ModelStatus.MODEL_STATUS_INSTALLED);
    expect(await status_("c")).to.equal(ModelStatus.MODEL_STATUS_INSTALLED);
    const described = await call(t.client, "describeCache", {});
    expect(described.maxBytes).to.equal(QUOTA);
    expect(described.storedBytes).to.be.at.most(QUOTA);
    expect(described.models.map((m) => m.name)).to.deep.equal(["a", "c"]);
    expect(await evictions("quota")).to.equal(1);
  });

  it("never evicts a pinned or leased install: refuses with RESOURCE_EXHAUSTED naming the flag and the bytes, evicting and storing nothing", async () => {
    await start({ cacheMaxBytes: QUOTA });
    await call(t.client, "updateModel", { name: "a", model: modelSpec({ name: "a", pinned: true }) });
    await pullModel("a");
    await pullModel("b");
    await call(t.client, "resolveModel", { name: "b", pullPolicy: PullPolicy.PULL_POLICY_NEVER, leaseSeconds: 600, credentialAlias: "" });
    const stored = await blobs();
    const outcome = await pull(t.client, { name: "c", fixtureDir: sources.get("c")! });
    expect(outcome.error?.code).to.equal(status.RESOURCE_EXHAUSTED);
    expect(outcome.error?.details).to.include("--cache-max-bytes").and.include("would free only 0 bytes");
    expect(outcome.events.map((e) => Object.keys(e).find((k) => k !== "name"))).to.not.include("fileStarted");
    expect(await status_("a")).to.equal(ModelStatus.MODEL_STATUS_INSTALLED);
    expect(await status_("b")).to.equal(ModelStatus.MODEL_STATUS_INSTALLED);
    expect(await status_("c")).to.equal(ModelStatus.MODEL_STATUS_REGISTERED);
    expect(await blobs()).to.equal(stored);
    expect(await evictions("quota")).to.equal(0);
    const described = await call(t.client, "describeCache", {});
    expect(described.evictableBytes).to.equal(0);
  });

  it("refuses a pull that would leave less than --min-free-bytes free, and the CLI exits 6", async () => {
    await start({ minFreeBytes: Number.MAX_SAFE_INTEGER });
    const outcome = await pull(t.client, { name: "a", fixtureDir: sources.get("a")! });
    expect(outcome.error?.code).to.equal(status.RESOURCE_EXHAUSTED);
    expect(outcome.error?.details).to.include("--min-free-bytes");
    expect(await status_("a")).to.equal(ModelStatus.MODEL_STATUS_REGISTERED);
    const cli = await runCli(t.server.address, ["pull", "a", "--fixture-dir", sources.get("a")!]);
    expect(cli.code, cli.stderr).to.equal(6);
  });

  it("keeps two pulls running at once from overcommitting the quota together", async () => {
    await start({ cacheMaxBytes: 1.5 * FILE_BYTES });
    const outcomes = await Promise.all(["a", "b"].map((name) => pull(t.client, { name, fixtureDir: sources.get(name)! })));
    const succeeded = outcomes.filter((o) => !o.error);
    expect(succeeded.length).to.be.at.least(1);
    for (const o of outcomes) if (o.error) expect(o.error.code).to.equal(status.RESOURCE_EXHAUSTED);
    const described = await call(t.client, "describeCache", {});
    expect(described.storedBytes).to.be.at.most(1.5 * FILE_BYTES);
    expect(described.models).to.have.length(1);
  });

  it("enforces a quota lowered across a restart at start, least recently used first", async () => {
    await start({});
    await pullModel("a");
    await pullModel("b");
    await t.restart({ metricsListen: "127.0.0.1:0", cacheMaxBytes: 1.5 * FILE_BYTES });
    expect(await status_("a")).to.equal(ModelStatus.MODEL_STATUS_REGISTERED);
    expect(await status_("b")).to.equal(ModelStatus.MODEL_STATUS_INSTALLED);
  });

  it("refuses a size that does not parse at start with exit code 2, naming the flag", async () => {
    await start({});
    for (const bad of ["10XB", "-5", "1.5.5GB", "GiB"]) {
      const run = await runCli(t.server.address, ["serve", "--data-dir", t.dataDir, "--cache-max-bytes", bad]);
      expect(run.code, bad).to.equal(2);
      expect(run.stderr).to.include("--cache-max-bytes");
    }
  });

  it("never waits for a model lock held in this process while admitting: a pull that needs the room of a model whose pull holds its lock and waits for admission evicts around it", async () => {
    await start({ cacheMaxBytes: QUOTA });
    await pullModel("a");
    await pullModel("b");
    // a is the least recently used: the first victim. Its lock is held by the test, as a pull of
    // a holds it from before its admission; the pull of c then needs room, and the holder of a's
    // lock waits for admission in turn, as that pull would.
    const releaseA = await t.server.runtime.locks.acquire("a", undefined);
    const giveUp = AbortSignal.timeout(20_000);
    try {
      const [c, admission] = await Promise.all([
        pull(t.client, { name: "c", fixtureDir: sources.get("c")! }, { deadline: new Date(Date.now() + 20_000) }),
        t.server.runtime.capacity.admit("a", { files: [] }, giveUp),
      ]);
      expect(c.error?.details, "the pull of c").to.equal(undefined);
      expect(c.events.find((e) => e.started)?.started?.evictedModels).to.deep.equal(["b"]);
      admission.release();
    } finally {
      await releaseA();
    }
    expect(await status_("a")).to.equal(ModelStatus.MODEL_STATUS_INSTALLED);
    expect(await status_("b")).to.equal(ModelStatus.MODEL_STATUS_REGISTERED);
    // and the model whose lock was held pulls again once it is free
    await pullOk(t.client, { name: "a", fixtureDir: sources.get("a")!, force: true });
  });

  it("names the models a pull evicted in its started event and in the CLI's output", async () => {
    await start({ cacheMaxBytes: QUOTA });
    await pullModel("a");
    await pullModel("b");
    const events = await pullModel("c");
    expect(events.find((e) => e.started)!.started!.evictedModels).to.deep.equal(["a"]);
    // a again: b goes; then b from the CLI: c, the least recently used now, goes
    await pullModel("a");
    const cli = await runCli(t.server.address, ["pull", "b", "--fixture-dir", sources.get("b")!]);
    expect(cli.code, cli.stderr).to.equal(0);
    expect(cli.stdout).to.match(/^evicted to make room: c \(still registered\)$/m);
  });

  it("re-pulls a directory that adds no bytes, forced or not, without evicting or refusing", async () => {
    await start({ cacheMaxBytes: QUOTA });
    await pullModel("a");
    // b pinned: nothing but a could make room, and a is the model being pulled
    await call(t.client, "updateModel", { name: "b", model: modelSpec({ name: "b", pinned: true }) });
    await pullModel("b");
    for (const force of [true, false]) {
      const events = await pullOk(t.client, { name: "a", fixtureDir: sources.get("a")!, force });
      expect(events.find((e) => e.started)!.started!.evictedModels, `force ${force}`).to.deep.equal([]);
    }
    expect(await status_("b")).to.equal(ModelStatus.MODEL_STATUS_INSTALLED);
    expect(await evictions("quota")).to.equal(0);
  });

  it("re-pulls a hub model with force (as auto-repair does) without evicting healthy models: its stored content adds nothing", async () => {
    const hub = await FakeHub.serve("acme/forced", await made({ "config.json": "{}" }), { "model.safetensors": randomBytes(2 * FILE_BYTES) });
    cleanups.push(() => hub.close());
    await start({ cacheMaxBytes: 3.2 * FILE_BYTES, hubUrl: hub.url });
    await call(t.client, "registerModel", { model: modelSpec({ name: "h", source: "acme/forced" }) });
    await pullOk(t.client, { name: "h" });
    await pullModel("a");
    const events = await pullOk(t.client, { name: "h", force: true });
    expect(events.find((e) => e.started)!.started!.evictedModels).to.deep.equal([]);
    expect(await status_("a")).to.equal(ModelStatus.MODEL_STATUS_INSTALLED);
    expect(await evictions("quota")).to.equal(0);
  });

  it("counts content shared only by eviction candidates as freeable, in eviction and in DescribeCache's evictable_bytes", async () => {
    const shared = randomBytes(FILE_BYTES);
    // a and b hold the same content; two copies of it do not fit with c
    await start({}, (name) => (name === "c" ? randomBytes(FILE_BYTES) : shared));
    await pullModel("a");
    await pullModel("b");
    await t.restart({ metricsListen: "127.0.0.1:0", cacheMaxBytes: 1.5 * FILE_BYTES });
    const described = await call(t.client, "describeCache", {});
    expect(described.evictableBytes).to.be.at.least(FILE_BYTES);
    const events = await pullModel("c");
    expect(events.find((e) => e.started)!.started!.evictedModels).to.deep.equal(["a", "b"]);
    expect((await call(t.client, "describeCache", {})).storedBytes).to.be.at.most(1.5 * FILE_BYTES);
  });

  it("collects content no install references before evicting anything", async () => {
    await start({ cacheMaxBytes: QUOTA });
    await pullModel("a");
    await pullModel("b");
    // left by a crash: stored content nothing links
    const orphan = randomBytes(FILE_BYTES);
    await writeFile(join(t.cacheRoot, ".blobs", "sha256", sha256(orphan)), orphan);
    await call(t.client, "dropCache", { name: "b", force: false });
    await pullModel("c");
    expect(await status_("a")).to.equal(ModelStatus.MODEL_STATUS_INSTALLED);
    expect(await evictions("quota")).to.equal(0);
    expect((await call(t.client, "describeCache", {})).storedBytes).to.be.at.most(QUOTA);
  });

  it("does not count a running pull's stored content twice: stored and reserved", async () => {
    const hub = await FakeHub.serve("acme/two-files", (await made({ "config.json": "{}" })), { "one.safetensors": randomBytes(FILE_BYTES), "two.safetensors": randomBytes(FILE_BYTES) });
    cleanups.push(() => hub.close());
    // a, the hub model and b fit; a second reservation of the hub model's stored file would not
    await start({ cacheMaxBytes: 4.3 * FILE_BYTES, hubUrl: hub.url, progressIntervalMs: 0 });
    await call(t.client, "registerModel", { model: modelSpec({ name: "h", source: "acme/two-files" }) });
    await pullModel("a");
    let open!: () => void;
    hub.faults.hold.set("two.safetensors", new Promise<void>((resolve) => (open = resolve)));
    let oneStored!: () => void;
    const stored = new Promise<void>((resolve) => (oneStored = resolve));
    const h = pull(t.client, { name: "h" }, { onEvent: (e) => void (e.fileCompleted?.path === "one.safetensors" && oneStored()) });
    try {
      await stored;
      await pullModel("b");
    } finally {
      open();
    }
    expect((await h).error).to.equal(undefined);
    expect(await status_("a")).to.equal(ModelStatus.MODEL_STATUS_INSTALLED);
    expect(await evictions("quota")).to.equal(0);
  });

  it("never evicts the content a pull counts on reusing: the content is not fetched again and the quota holds", async () => {
    const weights = randomBytes(2 * FILE_BYTES);
    const hub = await FakeHub.serve("acme/grows", (await made({ "config.json": "{}" })), { "model.safetensors": weights });
    cleanups.push(() => hub.close());
    const quota = 3.2 * FILE_BYTES;
    await start({ cacheMaxBytes: quota, hubUrl: hub.url });
    for (const name of ["h1", "h2"]) await call(t.client, "registerModel", { model: modelSpec({ name, source: "acme/grows" }) });
    await pullOk(t.client, { name: "h1" });
    await pullModel("a");
    // h2 is h1's weights and a new file: h1 (least recently used) holds the weights h2 will reuse
    hub.commitFile("extra.safetensors", randomBytes(0.5 * FILE_BYTES));
    const events = await pullOk(t.client, { name: "h2" });
    expect(events.find((e) => e.fileCompleted?.path === "model.safetensors")!.fileCompleted!.reused).to.equal(true);
    expect(hub.requests.filter((r) => r.path === `/lfs/${sha256(weights)}`).length, "downloads of the weights").to.equal(1);
    expect((await call(t.client, "describeCache", {})).storedBytes).to.be.at.most(quota);
    expect(await status_("a")).to.equal(ModelStatus.MODEL_STATUS_REGISTERED);
  });

  it("applies the models file's pins before enforcing a quota lowered across a restart", async () => {
    await start({});
    await pullModel("a");
    await pullModel("b");
    const dir = await mkdtemp(join(tmpdir(), "modelcache-models-"));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const entry = (name: string, pinned: boolean) =>
      [`  - name: ${name}`, "    source: sentence-transformers/all-MiniLM-L6-v2", "    revision: main", "    task: TASK_EMBEDDING", "    dimensions: 384", "    pull_policy: never", `    pinned: ${pinned}`].join("\n");
    await writeFile(join(dir, "models.yaml"), `models:\n${entry("a", true)}\n${entry("b", false)}\n`);
    // a is the least recently used, but the file pins it: b goes
    await t.restart({ metricsListen: "127.0.0.1:0", cacheMaxBytes: 1.5 * FILE_BYTES, modelsFile: join(dir, "models.yaml") });
    expect(await status_("a")).to.equal(ModelStatus.MODEL_STATUS_INSTALLED);
    expect(await status_("b")).to.equal(ModelStatus.MODEL_STATUS_REGISTERED);
  });

  it("PruneCache skips and reports what a running operation holds instead of waiting for it", async () => {
    const logs = captureLogs();
    await start({ logger: logs.logger });
    const leftover = join(t.cacheRoot, ".blobs", "partial", "gone", "0".repeat(40));
    await mkdir(leftover, { recursive: true });
    await writeFile(join(leftover, "model.safetensors"), randomBytes(1000));
    const release = await t.server.runtime.locks.acquire("gone", undefined);
    let pruned: Awaited<ReturnType<typeof pruneCache>>;
    try {
      pruned = await Promise.race([
        pruneCache(t.server.runtime, false),
        new Promise<never>((_, reject) => setTimeout(() => reject(new Error("PruneCache waited for a lock held by another operation")), 20_000).unref()),
      ]);
      // through the RPC: the skipped model is named in the log
      expect((await call(t.client, "pruneCache", { dryRun: false })).partialsRemoved).to.equal(0);
    } finally {
      await release();
    }
    expect(pruned.skipped).to.deep.equal(["gone"]);
    expect(pruned.partialsRemoved).to.equal(0);
    expect(logs.lines.find((l) => String(l.msg).startsWith("PruneCache skipped"))?.skipped).to.deep.equal(["gone"]);
    const after = await call(t.client, "pruneCache", { dryRun: false });
    expect(after.partialsRemoved).to.equal(1);
  });

  it("PruneCache and DescribeCache count the resumable downloads of commits a known model no longer needs", async () => {
    await start({});
    const partial = (commit: string) => join(t.cacheRoot, ".blobs", "partial", "a", commit);
    const [old, latest] = ["1".repeat(40), "2".repeat(40)];
    for (const commit of [old, latest]) {
      await mkdir(partial(commit), { recursive: true });
      await writeFile(join(partial(commit), "model.safetensors"), randomBytes(1000));
    }
    await utimes(partial(old), new Date(Date.now() - 3_600_000), new Date(Date.now() - 3_600_000));
    expect((await call(t.client, "describeCache", {})).reclaimableBytes).to.equal(1000);
    const pruned = await call(t.client, "pruneCache", { dryRun: false });
    expect(pruned.partialsRemoved).to.equal(1);
    expect(await readdir(join(t.cacheRoot, ".blobs", "partial", "a"))).to.deep.equal([latest]);
    // a revision naming a commit needs that commit's download only
    await call(t.client, "updateModel", { name: "a", model: modelSpec({ name: "a", revision: old }) });
    expect((await call(t.client, "pruneCache", { dryRun: true })).partialsRemoved).to.equal(1);
  });

  async function made(files: Record<string, string | Buffer>): Promise<string> {
    const dir = await makeSourceDir(files);
    cleanups.push(dir.cleanup);
    return dir.dir;
  }
});
