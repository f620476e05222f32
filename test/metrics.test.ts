import { statfs } from "node:fs/promises";
import { expect } from "chai";
import { status } from "@grpc/grpc-js";
import { FIXTURE_DIR, type TestServer, call, callError, modelSpec, pull, pullOk, startTestServer } from "./support/test-server.js";

/** The value of one sample line of a Prometheus text page, by metric name and labels. */
function sample(page: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of page.split("\n")) {
    const match = /^([a-z_]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const have = Object.fromEntries([...(match[2] ?? "").matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(match[3]);
  }
  return undefined;
}

describe("metrics at /metrics (--metrics-listen)", () => {
  let t: TestServer;
  beforeEach(async () => {
    t = await startTestServer({ metricsListen: "127.0.0.1:0" });
  });
  afterEach(() => t.close());
  const scrape = async () => (await fetch(`http://${t.server.metricsAddress}/metrics`)).text();

  it("counts RPCs by method and code, pulls by result, and the bytes pulled and cached", async () => {
    await call(t.client, "registerModel", { model: modelSpec() });
    const events = await pullOk(t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
    const total = events.at(-1)!.completed!.manifest!.totalSizeBytes;
    expect((await callError(t.client, "getModel", { name: "ghost" })).code).to.equal(status.NOT_FOUND);
    expect((await pull(t.client, { name: "minilm", fixtureDir: "/nonexistent" })).error?.code).to.equal(status.INVALID_ARGUMENT);

    const page = await scrape();
    const rpc = { grpc_service: "modelcache.v1.ModelCacheService" };
    expect(sample(page, "grpc_server_started_total", { ...rpc, grpc_method: "Pull", grpc_type: "server_stream" })).to.equal(2);
    expect(sample(page, "grpc_server_handled_total", { ...rpc, grpc_method: "Pull", grpc_code: "OK" })).to.equal(1);
    expect(sample(page, "grpc_server_handled_total", { ...rpc, grpc_method: "Pull", grpc_code: "INVALID_ARGUMENT" })).to.equal(1);
    expect(sample(page, "grpc_server_handled_total", { ...rpc, grpc_method: "GetModel", grpc_code: "NOT_FOUND", grpc_type: "unary" })).to.equal(1);
    expect(sample(page, "grpc_server_handling_seconds_count", { ...rpc, grpc_method: "RegisterModel" })).to.equal(1);
    expect(sample(page, "modelcache_pulls_total", { result: "ok" })).to.equal(1);
    expect(sample(page, "modelcache_pull_bytes_total")).to.equal(total);
    expect(sample(page, "modelcache_pull_duration_seconds_count")).to.equal(1);
    expect(sample(page, "modelcache_cache_bytes", { model: "minilm" })).to.equal(total);
    expect(sample(page, "modelcache_pull_jobs", { state: "running" })).to.equal(0);
    expect(sample(page, "modelcache_pull_jobs", { state: "queued" })).to.equal(0);
  });

  it("drops a model's cache bytes when its cache is dropped", async () => {
    await call(t.client, "registerModel", { model: modelSpec() });
    await pullOk(t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
    await call(t.client, "dropCache", { name: "minilm", force: false });
    expect(sample(await scrape(), "modelcache_cache_bytes", { model: "minilm" })).to.equal(undefined);
  });

  it("reports the store's stored and logical bytes, and the bytes pulls took from the store", async () => {
    await call(t.client, "registerModel", { model: modelSpec() });
    await call(t.client, "registerModel", { model: modelSpec({ name: "twin" }) });
    const total = (await pullOk(t.client, { name: "minilm", fixtureDir: FIXTURE_DIR })).at(-1)!.completed!.manifest!.totalSizeBytes;
    await pullOk(t.client, { name: "twin", fixtureDir: FIXTURE_DIR });
    const page = await scrape();
    expect(sample(page, "modelcache_reused_bytes_total")).to.equal(total);
    const [stored, logical] = [sample(page, "modelcache_store_bytes", { kind: "stored" })!, sample(page, "modelcache_store_bytes", { kind: "logical" })!];
    // two installs of the same files: logical counts them twice, the store once (manifests are each install's own)
    expect(logical - stored).to.equal(total);
  });

  it("exports the settings alerts compare with: the quota, the free floor, the free space now, the verification interval (0: off), the start time", async () => {
    const page = await scrape();
    expect(sample(page, "modelcache_capacity_bytes", { kind: "max" })).to.equal(0);
    expect(sample(page, "modelcache_capacity_bytes", { kind: "min_free" })).to.equal(2 ** 30);
    const free = sample(page, "modelcache_capacity_bytes", { kind: "free" })!;
    const fs = await statfs(t.dataDir);
    // the same filesystem as the test's data dir, within what other writers changed meanwhile
    expect(Math.abs(free - fs.bavail * fs.bsize)).to.be.lessThan(256 * 2 ** 20);
    expect(sample(page, "modelcache_verify_interval_seconds")).to.equal(0);
    const started = sample(page, "modelcache_start_time_seconds")!;
    expect(started).to.be.within(Date.now() / 1000 - process.uptime() - 2, Date.now() / 1000);

    const configured = await startTestServer({ metricsListen: "127.0.0.1:0", cacheMaxBytes: 5 * 2 ** 20, minFreeBytes: 2 ** 20, verifyIntervalMs: 6 * 3600 * 1000 });
    try {
      const other = await (await fetch(`http://${configured.server.metricsAddress}/metrics`)).text();
      expect(sample(other, "modelcache_capacity_bytes", { kind: "max" })).to.equal(5 * 2 ** 20);
      expect(sample(other, "modelcache_capacity_bytes", { kind: "min_free" })).to.equal(2 ** 20);
      expect(sample(other, "modelcache_verify_interval_seconds")).to.equal(6 * 3600);
    } finally {
      await configured.close();
    }
  });

  it("answers 404 off /metrics", async () => {
    expect((await fetch(`http://${t.server.metricsAddress}/other`)).status).to.equal(404);
  });
});
