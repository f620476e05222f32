import { randomBytes } from "node:crypto";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import { expect } from "chai";
import { ModelStatus, PullPolicy } from "../generated/modelcache/v1/model_cache.js";
import type { ServerOptions } from "../src/server/start-server.js";
import { runCli } from "./support/run-cli.js";
import { makeSourceDir } from "./support/source-dir.js";
import { type TestServer, call, modelSpec, pull, pullOk, startTestServer } from "./support/test-server.js";

const FILE_BYTES = 100_000;

describe("capacity", () => {
  let t: TestServer;
  const sources = new Map<string, string>();
  const cleanups: (() => Promise<void>)[] = [];

  async function start(options: Partial<ServerOptions>): Promise<void> {
    t = await startTestServer({ metricsListen: "127.0.0.1:0", ...options });
    for (const name of ["a", "b", "c"]) {
      await call(t.client, "registerModel", { model: modelSpec({ name }) });
      const made = await makeSourceDir({ "config.json": `{"model":"${name}"}`, "model.safetensors": randomBytes(FILE_BYTES) });
      cleanups.push(made.cleanup);
      sources.set(name, made.dir);
    }
  }
  afterEach(async () => {
    await t.close();
    for (const cleanup of cleanups.splice(0)) await cleanup();
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
});
