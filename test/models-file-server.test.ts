import { expect } from "chai";
import { access, mkdir, mkdtemp, rename, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import { CacheStatus } from "../generated/modelcache/v1/model_cache.js";
import { FakeHub } from "./support/fake-hub.js";
import { captureLogs } from "./support/log-capture.js";
import { spawnServer } from "./support/child-server.js";
import { runCli } from "./support/run-cli.js";
import { FIXTURE_DIR, type TestServer, call, callError, modelSpec, pullOk, startTestServer } from "./support/test-server.js";

const REPO = "acme/tiny-minilm";

/** A model entry of a models file, in YAML. */
function entry(name: string, extra: string[] = [], keys: "snake" | "camel" = "snake"): string {
  const policy = keys === "snake" ? "pull_policy" : "pullPolicy";
  return [`  - name: ${name}`, `    source: ${REPO}`, "    revision: main", "    task: TASK_EMBEDDING", "    dimensions: 384", ...(extra.some((e) => e.startsWith("pull")) ? [] : [`    ${policy}: never`]), ...extra.map((e) => `    ${e}`)].join("\n");
}
const file = (...entries: string[]) => `models:\n${entries.join("\n")}\n`;

/** Polls `check` until it stops throwing (a deadline keeps a broken watcher from hanging the suite). */
async function eventually<T>(check: () => Promise<T>, what: string, ms = 20_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await check();
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`${what}: ${(err as Error).message}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

async function names(t: TestServer): Promise<string[]> {
  return (await call(t.client, "listModels", {})).models.map((m) => m.name);
}

describe("the server's models file", () => {
  let dir: string;
  let path: string;
  let t: TestServer | undefined;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "modelcache-models-"));
    path = join(dir, "models.yaml");
  });
  afterEach(async () => {
    await t?.close();
    t = undefined;
    await rm(dir, { recursive: true, force: true });
  });

  it("applies the rest of the file when a model it removes is leased, logs that one, and removes it once the lease is released", async () => {
    await writeFile(path, file(entry("a"), entry("b")));
    const logs = captureLogs();
    t = await startTestServer({ modelsFile: path, fixtureDir: FIXTURE_DIR, modelsFileRetryMs: 20, logger: logs.logger });
    const server = t;
    await pullOk(server.client, { name: "a" });
    const { leaseId } = await call(server.client, "resolveModel", { name: "a", pullPolicy: 0, leaseSeconds: 600, credentialAlias: "" });
    // 'a' (leased) sorts before 'c': the apply must not stop there
    await writeFile(path, file(entry("b"), entry("c")));
    await server.server.modelsFile!.reload();
    expect(await names(server)).to.deep.equal(["a", "b", "c"]);
    const warning = logs.lines.find((l) => String(l.msg).startsWith("a model of the models file could not be changed now") && l.model === "a");
    expect(String(warning?.error)).to.include("lease");
    await call(server.client, "releaseLease", { leaseId });
    await eventually(async () => expect(await names(server)).to.deep.equal(["b", "c"]), "a retry removed the model once its lease ended");
  });

  it("is applied at start: keys in either spelling, enums as full names or short words", async () => {
    await writeFile(path, file(entry("a", ["pull_policy: PULL_POLICY_NEVER"]), entry("b", ["pullPolicy: never", "trustPolicy: TRUST_POLICY_DISABLED"], "camel")));
    t = await startTestServer({ modelsFile: path });
    const { models } = await call(t.client, "listModels", {});
    expect(models.map((m) => [m.name, m.managedBy])).to.deep.equal([
      ["a", "models-file"],
      ["b", "models-file"],
    ]);
  });

  it("follows edits: updates, additions, and removals (the removed model's cache is dropped); RPC models stay", async () => {
    await writeFile(path, file(entry("a"), entry("b")));
    t = await startTestServer({ modelsFile: path, modelsFileDebounceMs: 20 });
    await call(t.client, "registerModel", { model: modelSpec({ name: "rpc" }) });
    await pullOk(t.client, { name: "b", fixtureDir: FIXTURE_DIR });
    const server = t;
    await writeFile(path, file(entry("a").replace("revision: main", "revision: v2"), entry("c")));
    await eventually(async () => expect(await names(server)).to.deep.equal(["a", "c", "rpc"]), "the edit was applied");
    expect((await call(server.client, "getModel", { name: "a" })).model!.revision).to.equal("v2");
    expect(await access(join(t.cacheRoot, "b")).then(() => true, () => false)).to.equal(false);
    expect((await call(server.client, "getModel", { name: "rpc" })).model!.managedBy).to.equal("");
  });

  it("sees a file replaced by a rename, and a ConfigMap's symlink swap", async () => {
    // the layout the kubelet makes: models.yaml -> ..data/models.yaml, ..data -> ..<timestamp>
    await mkdir(join(dir, "..v1"));
    await writeFile(join(dir, "..v1", "models.yaml"), file(entry("a")));
    await symlink("..v1", join(dir, "..data"));
    await symlink(join("..data", "models.yaml"), path);
    t = await startTestServer({ modelsFile: path, modelsFileDebounceMs: 20 });
    const server = t;
    expect(await names(server)).to.deep.equal(["a"]);

    await mkdir(join(dir, "..v2"));
    await writeFile(join(dir, "..v2", "models.yaml"), file(entry("b")));
    await symlink("..v2", join(dir, "..data_tmp"));
    await rename(join(dir, "..data_tmp"), join(dir, "..data"));
    await eventually(async () => expect(await names(server)).to.deep.equal(["b"]), "the symlink swap was applied");

    // an editor's save: write a new file beside it, rename it over the old one
    await rm(path);
    await writeFile(join(dir, ".models.yaml.swp"), file(entry("b"), entry("c")));
    await rename(join(dir, ".models.yaml.swp"), path);
    await eventually(async () => expect(await names(server)).to.deep.equal(["b", "c"]), "the renamed file was applied");
  });

  it("keeps the last good state on an invalid edit, logs it naming the line, and counts it", async () => {
    await writeFile(path, file(entry("a")));
    const logs = captureLogs();
    t = await startTestServer({ modelsFile: path, modelsFileDebounceMs: 20, metricsListen: "127.0.0.1:0", logger: logs.logger });
    const server = t;
    const scrape = async () => (await fetch(`http://${server.server.metricsAddress}/metrics`)).text();
    expect(await scrape()).to.match(/^modelcache_models_file_applied_timestamp_seconds [1-9]/m);
    await writeFile(path, file(entry("a").replace("dimensions: 384", "dimensions: 0"), entry("b")));
    await eventually(async () => expect(await scrape()).to.match(/^modelcache_models_file_errors_total 1$/m), "the error was counted");
    expect(await scrape()).to.match(/^modelcache_models_file_failing 1$/m);
    const logged = logs.lines.find((l) => l.msg === "the models file was not applied; the models stay as the last good version left them");
    expect(String(logged?.error)).to.include(`${path}:6`).and.include("models[0] (a): dimensions must be between 1 and 65536");
    expect(await names(server)).to.deep.equal(["a"]);
    expect((await call(server.client, "getModel", { name: "a" })).model!.dimensions).to.equal(384);
    // the edit undone: the file holds what was applied, nothing is failing any more
    await writeFile(path, file(entry("a")));
    await eventually(async () => expect(await scrape()).to.match(/^modelcache_models_file_failing 0$/m), "the undone edit cleared the failure");
  });

  it("stops the server at start with exit code 2, naming the file, the line and the field", async () => {
    await writeFile(path, file(entry("a", ["hf_token: hf_abc"])));
    const data = join(dir, "data");
    const run = await runCli("127.0.0.1:1", ["serve", "--listen", "127.0.0.1:0", "--data-dir", data, "--log-format", "json", "--models-file", path]);
    expect(run.code).to.equal(2);
    expect(run.stdout).to.include(`${path}:8`).and.include("hf_token").and.include("credential_alias").and.not.include("hf_abc");
    expect(run.stdout).not.to.include("modelcache is serving");
    // refused before anything opened: no data dir, no registry
    expect(await access(data).then(() => true, () => false)).to.equal(false);
  });

  it("is applied again on SIGHUP: a dropped IF_MISSING model is pulled again", async () => {
    await writeFile(path, file(entry("a", ["pull_policy: if-missing"])));
    const server = await spawnServer({ dataDir: join(dir, "data"), args: ["--models-file", path, "--fixture-dir", FIXTURE_DIR], logFile: join(dir, "server.log") });
    try {
      const installed = async () => expect((await call(server.client, "inspectCache", { name: "a", deep: false })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
      await eventually(installed, "the background pull at start installed the model");
      const refused = await callError(server.client, "unregisterModel", { name: "a", dropCache: true });
      expect(refused.code).to.equal(status.FAILED_PRECONDITION);
      expect(refused.details).to.include(path);
      await call(server.client, "dropCache", { name: "a", force: false });
      expect((await call(server.client, "inspectCache", { name: "a", deep: false })).status).to.equal(CacheStatus.CACHE_STATUS_MISSING);
      server.process.kill("SIGHUP");
      await eventually(installed, "SIGHUP applied the file and pulled the model again");
    } finally {
      await server.kill();
    }
  });
});

describe("background pulls of the models file's models", () => {
  let hub: FakeHub;
  let dir: string;
  let t: TestServer | undefined;
  beforeEach(async () => {
    hub = await FakeHub.serve(REPO, FIXTURE_DIR);
    dir = await mkdtemp(join(tmpdir(), "modelcache-models-"));
  });
  afterEach(async () => {
    await t?.close();
    t = undefined;
    await hub.close();
    await rm(dir, { recursive: true, force: true });
  });

  const status = async (server: TestServer, name: string) => (await call(server.client, "inspectCache", { name, deep: false })).status;

  it("pulls IF_MISSING and ALWAYS models from the hub, never a NEVER model; ALWAYS again on each apply", async () => {
    const path = join(dir, "models.yaml");
    await writeFile(path, file(entry("missing", ["pull_policy: if_missing"]), entry("always", ["pull_policy: always"]), entry("never", ["pull_policy: never"])));
    t = await startTestServer({ modelsFile: path, hubUrl: hub.url });
    const server = t;
    await eventually(async () => {
      expect(await status(server, "missing")).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
      expect(await status(server, "always")).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
      expect(server.server.modelsFile!.backgroundPulls).to.equal(0);
    }, "the background pulls ended");
    expect(await status(server, "never")).to.equal(CacheStatus.CACHE_STATUS_MISSING);

    const asked = () => hub.requests.filter((r) => r.origin === "hub" && r.path.includes("/revision/")).length;
    const before = asked();
    await server.server.modelsFile!.reload();
    await eventually(async () => expect(server.server.modelsFile!.backgroundPulls).to.equal(0), "the pulls after the reload ended");
    // only the ALWAYS model asked the hub again
    expect(asked()).to.equal(before + 1);
  });

  it("logs a failed background pull and tries again until it succeeds", async () => {
    hub.faults.token = "hf_secret_token";
    const path = join(dir, "models.yaml");
    await writeFile(path, file(entry("private", ["pull_policy: if_missing", "credential_alias: hf"])));
    const logs = captureLogs();
    t = await startTestServer({ modelsFile: path, hubUrl: hub.url, modelsFileRetryMs: 20, logger: logs.logger });
    const server = t;
    await eventually(async () => expect(logs.lines.some((l) => l.msg === "a background pull of a model of the models file failed; trying again later" && l.model === "private")).to.equal(true), "the failure was logged");
    expect(await status(server, "private")).to.equal(CacheStatus.CACHE_STATUS_MISSING);
    await call(server.client, "putSecret", { alias: "hf", value: "hf_secret_token" });
    await eventually(async () => expect(await status(server, "private")).to.equal(CacheStatus.CACHE_STATUS_INSTALLED), "a retry installed the model");
    expect(logs.raw()).not.to.include("hf_secret_token");
  });
});
