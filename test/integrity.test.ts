import { chmod, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { expect } from "chai";
import { CacheStatus, ModelStatus, UnhealthyReason } from "../generated/modelcache/v1/model_cache.js";
import type { ServerOptions } from "../src/server/start-server.js";
import { FakeHub } from "./support/fake-hub.js";
import { runCli } from "./support/run-cli.js";
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
    t = await startTestServer({ metricsListen: "127.0.0.1:0", verifyIntervalMs: 20, ...options });
  };

  it("finds corrupt content: the model is UNHEALTHY naming the file, the content is never linked again, a pull repairs it", async () => {
    await start({ fixtureDir: FIXTURE_DIR });
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
    // a source directory is not repaired automatically
    expect(await modelStatus()).to.equal(ModelStatus.MODEL_STATUS_UNHEALTHY);

    await pullOk(t.client, { name: "minilm" });
    const deep = await call(t.client, "inspectCache", { name: "minilm", deep: true });
    expect(deep.status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
    expect(await readFile(join(t.cacheRoot, "minilm", "config.json"))).to.deep.equal(await readFile(join(FIXTURE_DIR, "config.json")));
    expect(await modelStatus()).to.equal(ModelStatus.MODEL_STATUS_INSTALLED);
  });

  it("stays UNHEALTHY across a restart until pulled again", async () => {
    await start({ fixtureDir: FIXTURE_DIR });
    await call(t.client, "registerModel", { model: modelSpec() });
    await pullOk(t.client, { name: "minilm" });
    await corrupt("config.json");
    await eventually("the model is unhealthy", async () => (await modelStatus()) === ModelStatus.MODEL_STATUS_UNHEALTHY);
    await t.restart({ fixtureDir: FIXTURE_DIR });
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
