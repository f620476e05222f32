import { chmod, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { expect } from "chai";
import { CacheStatus, ModelStatus, UnhealthyReason } from "../generated/modelcache/v1/model_cache.js";
import type { ServerOptions } from "../src/server/start-server.js";
import { FakeHub } from "./support/fake-hub.js";
import { captureLogs } from "./support/log-capture.js";
import { runCli } from "./support/run-cli.js";
import { makeSourceDir } from "./support/source-dir.js";
import { FIXTURE_DIR, type TestServer, call, modelSpec, pullOk, startTestServer } from "./support/test-server.js";

const REPO = "acme/tiny-minilm";

/** Polls until `check` holds; fails naming `what` after a generous bound (a liveness bound, not a timing assertion). */
async function eventually(what: string, check: () => Promise<boolean>): Promise<void> {
  const until = Date.now() + 20_000;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`never happened: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

describe("integrity over time", () => {
  let t: TestServer;
  let hub: FakeHub | undefined;
  afterEach(async () => {
    await t.close();
    await hub?.close();
    hub = undefined;
  });

  const metric = async (name: string) => {
    const text = await (await fetch(`http://${t.server.metricsAddress}/metrics`)).text();
    return Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1] ?? 0);
  };
  const modelStatus = async () => (await call(t.client, "getModel", { name: "minilm" })).model!.status;
  /** Overwrites an installed file's bytes in place, same size: the shared content itself changes. */
  async function corrupt(path: string): Promise<void> {
    const file = join(t.cacheRoot, "minilm", path);
    const bytes = await readFile(file);
    bytes[0] = bytes[0]! ^ 0xff;
    await chmod(file, 0o644);
    await writeFile(file, bytes);
    await chmod(file, 0o444);
  }
  const start = async (options: Partial<ServerOptions>) => {
    t = await startTestServer({ metricsListen: "127.0.0.1:0", verifyIntervalMs: 20, autoRepair: true, ...options });
  };

  it("finds corrupt content: the model is UNHEALTHY naming the file, the content is never linked again, a pull repairs it", async () => {
    await start({ fixtureDir: FIXTURE_DIR, autoRepair: false });
    await call(t.client, "registerModel", { model: modelSpec() });
    await pullOk(t.client, { name: "minilm" });
    await eventually("a verification pass", async () => (await metric("modelcache_verify_bytes_total")) > 0);
    await corrupt("config.json");
    await eventually("the model is unhealthy", async () => (await modelStatus()) === ModelStatus.MODEL_STATUS_UNHEALTHY);
    const report = await call(t.client, "inspectCache", { name: "minilm", deep: false });
    expect(report.status).to.equal(CacheStatus.CACHE_STATUS_UNHEALTHY);
    expect(report.reason).to.equal(UnhealthyReason.UNHEALTHY_REASON_CHECKSUM_MISMATCH);
    expect(report.detail).to.include("config.json");
    expect(await metric("modelcache_corrupt_files_total")).to.equal(1);
    // without --auto-repair it stays so
    expect(await modelStatus()).to.equal(ModelStatus.MODEL_STATUS_UNHEALTHY);

    await pullOk(t.client, { name: "minilm" });
    const deep = await call(t.client, "inspectCache", { name: "minilm", deep: true });
    expect(deep.status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
    expect(await readFile(join(t.cacheRoot, "minilm", "config.json"))).to.deep.equal(await readFile(join(FIXTURE_DIR, "config.json")));
    expect(await modelStatus()).to.equal(ModelStatus.MODEL_STATUS_INSTALLED);
  });

  it("stays UNHEALTHY across a restart until pulled again", async () => {
    await start({ fixtureDir: FIXTURE_DIR, autoRepair: false });
    await call(t.client, "registerModel", { model: modelSpec() });
    await pullOk(t.client, { name: "minilm" });
    await corrupt("config.json");
    await eventually("the model is unhealthy", async () => (await modelStatus()) === ModelStatus.MODEL_STATUS_UNHEALTHY);
    await t.restart({ fixtureDir: FIXTURE_DIR, autoRepair: false });
    expect(await modelStatus()).to.equal(ModelStatus.MODEL_STATUS_UNHEALTHY);
    expect((await call(t.client, "inspectCache", { name: "minilm", deep: false })).reason).to.equal(UnhealthyReason.UNHEALTHY_REASON_CHECKSUM_MISMATCH);
  });

  it("with --auto-repair (the default) pulls a hub model again in the background", async () => {
    hub = await FakeHub.serve(REPO, FIXTURE_DIR);
    await start({ hubUrl: hub.url });
    await call(t.client, "registerModel", { model: modelSpec({ source: REPO }) });
    await pullOk(t.client, { name: "minilm" });
    await corrupt("config.json");
    await eventually("the repair pull", async () => (await metric('modelcache_repairs_total{result="ok"}')) === 1);
    expect(await metric("modelcache_corrupt_files_total")).to.be.at.least(1);
    expect(await modelStatus()).to.equal(ModelStatus.MODEL_STATUS_INSTALLED);
    const deep = await call(t.client, "inspectCache", { name: "minilm", deep: true });
    expect(deep.status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
  });

  describe("of a model installed from a local directory (a fine-tune of its hub source)", () => {
    let fineTune: { dir: string; cleanup: () => Promise<void> };
    const FINE_TUNED = '{"fine_tuned":true}';
    beforeEach(async () => {
      fineTune = await makeSourceDir({ "config.json": FINE_TUNED, "model.safetensors": await readFile(join(FIXTURE_DIR, "model.safetensors")) });
    });
    afterEach(() => fineTune.cleanup());
    const contentRequests = () => hub!.requests.filter((r) => r.path.includes("/resolve/") || r.path.startsWith("/lfs/")).length;

    it("with --auto-repair pulls it again from that directory, never from its hub", async () => {
      hub = await FakeHub.serve(REPO, FIXTURE_DIR);
      await start({ hubUrl: hub.url });
      await call(t.client, "registerModel", { model: modelSpec({ source: REPO }) });
      await pullOk(t.client, { name: "minilm", fixtureDir: fineTune.dir });
      await corrupt("config.json");
      await eventually("the repair pull", async () => (await metric('modelcache_repairs_total{result="ok"}')) === 1);
      expect(await readFile(join(t.cacheRoot, "minilm", "config.json"), "utf8")).to.equal(FINE_TUNED);
      expect((await call(t.client, "inspectCache", { name: "minilm", deep: true })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
      expect(contentRequests()).to.equal(0);
    });

    it("leaves it UNHEALTHY, naming the directory, once the directory is gone", async () => {
      hub = await FakeHub.serve(REPO, FIXTURE_DIR);
      const logs = captureLogs("info");
      await start({ hubUrl: hub.url, logger: logs.logger });
      await call(t.client, "registerModel", { model: modelSpec({ source: REPO }) });
      await pullOk(t.client, { name: "minilm", fixtureDir: fineTune.dir });
      await fineTune.cleanup();
      await corrupt("config.json");
      const refusal = () => logs.lines.find((l) => String(l.msg).startsWith("not repaired automatically"));
      await eventually("the repair refused", async () => refusal() !== undefined);
      expect(refusal()!.msg).to.include(fineTune.dir).and.include("no longer exists").and.include(REPO);
      expect(await modelStatus()).to.equal(ModelStatus.MODEL_STATUS_UNHEALTHY);
      expect(contentRequests()).to.equal(0);
      expect(await metric('modelcache_repairs_total{result="ok"}')).to.equal(0);
      expect(await metric('modelcache_repairs_total{result="failed"}')).to.equal(0);
    });
  });

  it("with --no-auto-repair leaves a hub model UNHEALTHY and fetches nothing", async () => {
    hub = await FakeHub.serve(REPO, FIXTURE_DIR);
    await start({ hubUrl: hub.url, autoRepair: false });
    await call(t.client, "registerModel", { model: modelSpec({ source: REPO }) });
    await pullOk(t.client, { name: "minilm" });
    const requests = hub.requests.length;
    await corrupt("config.json");
    await eventually("the model is unhealthy", async () => (await modelStatus()) === ModelStatus.MODEL_STATUS_UNHEALTHY);
    await eventually("another full pass", async () => {
      const before = await metric("modelcache_verify_last_full_pass_timestamp_seconds");
      await new Promise((resolve) => setTimeout(resolve, 100));
      return (await metric("modelcache_verify_last_full_pass_timestamp_seconds")) > before;
    });
    expect(await modelStatus()).to.equal(ModelStatus.MODEL_STATUS_UNHEALTHY);
    expect(hub.requests.length).to.equal(requests);
  });

  it("refuses a duration or size that does not parse at start, with exit code 2", async () => {
    await start({});
    for (const args of [["--verify-interval", "5 minutes"], ["--verify-interval", "0s"], ["--verify-bytes-per-second", "fast"]]) {
      const run = await runCli(t.server.address, ["serve", "--data-dir", t.dataDir, ...args]);
      expect(run.code, args.join(" ")).to.equal(2);
      expect(run.stderr).to.include(args[0]!);
    }
  });
});
