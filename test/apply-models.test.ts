import { expect } from "chai";
import { access } from "node:fs/promises";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import { applyModels } from "../src/models-file/apply-models.js";
import { validateSpecs } from "../src/models-file/validate-specs.js";
import { specFromProto } from "../src/grpc/convert.js";
import { ChangeAction, type ModelSpec, ModelStatus, PullPolicy } from "../generated/modelcache/v1/model_cache.js";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { runCli } from "./support/run-cli.js";
import { captureLogs } from "./support/log-capture.js";
import { FakeHub } from "./support/fake-hub.js";
import { FIXTURE_DIR, type TestServer, call, callError, modelSpec, pull, pullOk, startTestServer } from "./support/test-server.js";

/** Applies `specs` as the models file would. */
function applyAsFile(t: TestServer, specs: ModelSpec[]) {
  return applyModels(t.server.runtime, validateSpecs(specs.map(specFromProto)), { scope: { by: "models-file" }, dryRun: false, signal: new AbortController().signal });
}

/** A server following an empty models file, as `applyAsFile` stands in for its later versions. */
async function startFollowingFile(): Promise<{ t: TestServer; close(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), "modelcache-apply-"));
  await writeFile(join(dir, "models.yaml"), "models: []\n");
  const t = await startTestServer({ modelsFile: join(dir, "models.yaml") });
  return { t, close: async () => { await t.close(); await rm(dir, { recursive: true, force: true }); } };
}

const exists = (path: string) => access(path).then(() => true, () => false);
const plan = (changes: { name: string; action: ChangeAction; changedFields: string[] }[]) => changes.map((c) => [c.name, ChangeAction[c.action], c.changedFields.join(",")]);

describe("ApplyModels", () => {
  let t: TestServer;
  let server: Awaited<ReturnType<typeof startFollowingFile>>;
  beforeEach(async () => {
    server = await startFollowingFile();
    t = server.t;
  });
  afterEach(async () => {
    await server.close();
  });

  it("reports the plan on a dry run and changes nothing", async () => {
    await call(t.client, "registerModel", { model: modelSpec({ name: "kept" }) });
    const { changes } = await call(t.client, "applyModels", { models: [modelSpec({ name: "new" }), modelSpec({ name: "kept", dimensions: 8 })], dryRun: true, prune: true });
    expect(plan(changes)).to.deep.equal([
      ["kept", "CHANGE_ACTION_UPDATE", "dimensions"],
      ["new", "CHANGE_ACTION_CREATE", ""],
    ]);
    const { models } = await call(t.client, "listModels", {});
    expect(models.map((m) => [m.name, m.dimensions])).to.deep.equal([["kept", 384]]);
  });

  it("creates, updates only what differs, and leaves an equal spec alone: no write, no new updated_at", async () => {
    await call(t.client, "applyModels", { models: [modelSpec({ name: "a" }), modelSpec({ name: "b" })], dryRun: false, prune: false });
    const before = (await call(t.client, "getModel", { name: "a" })).model!;
    const { changes } = await call(t.client, "applyModels", { models: [modelSpec({ name: "a" }), modelSpec({ name: "b", revision: "v2", pullPolicy: PullPolicy.PULL_POLICY_NEVER })], dryRun: false, prune: false });
    expect(plan(changes)).to.deep.equal([
      ["a", "CHANGE_ACTION_UNCHANGED", ""],
      ["b", "CHANGE_ACTION_UPDATE", "revision,pull_policy"],
    ]);
    const after = (await call(t.client, "getModel", { name: "a" })).model!;
    expect(after.updatedAt!.getTime()).to.equal(before.updatedAt!.getTime());
    expect((await call(t.client, "getModel", { name: "b" })).model!.revision).to.equal("v2");
    expect(after.managedBy).to.equal("");
  });

  it("deletes models it does not list only with prune, dropping their caches, and never a model the models file manages", async () => {
    await call(t.client, "registerModel", { model: modelSpec({ name: "rpc" }) });
    await pullOk(t.client, { name: "rpc", fixtureDir: FIXTURE_DIR });
    await applyAsFile(t, [modelSpec({ name: "filed" })]);
    const kept = await call(t.client, "applyModels", { models: [], dryRun: false, prune: false });
    expect(kept.changes).to.deep.equal([]);
    const pruned = await call(t.client, "applyModels", { models: [], dryRun: false, prune: true });
    expect(plan(pruned.changes)).to.deep.equal([["rpc", "CHANGE_ACTION_DELETE", ""]]);
    expect((await call(t.client, "listModels", {})).models.map((m) => m.name)).to.deep.equal(["filed"]);
    expect(await exists(join(t.cacheRoot, "rpc"))).to.equal(false);
  });

  it("refuses, changing nothing, an invalid spec (naming models[i] and the field) or a name listed twice", async () => {
    const invalid = await callError(t.client, "applyModels", { models: [modelSpec({ name: "a" }), modelSpec({ name: "b", dimensions: 0 })], dryRun: false, prune: false });
    expect(invalid.code).to.equal(status.INVALID_ARGUMENT);
    expect(invalid.details).to.match(/^models\[1\]\.dimensions must be between 1 and 65536/);
    const twice = await callError(t.client, "applyModels", { models: [modelSpec({ name: "a" }), modelSpec({ name: "a" })], dryRun: false, prune: false });
    expect(twice.details).to.include("models[1].name 'a' is also models[0].name");
    expect((await call(t.client, "listModels", {})).models).to.deep.equal([]);
  });

  it("writes an audit line naming the models asked for, and whether it was a dry run", async () => {
    const logs = captureLogs();
    await t.restart({ logger: logs.logger });
    await call(t.client, "applyModels", { models: [modelSpec({ name: "a" }), modelSpec({ name: "b" })], dryRun: true, prune: false });
    expect(logs.audit().map((l) => [l.method, l.models, l.dryRun, l.result])).to.deep.equal([["ApplyModels", ["a", "b"], true, "OK"]]);
  });

  it("refuses to change a model the models file manages (a dry run shows the plan), and leaves it unchanged when its spec is equal", async () => {
    await applyAsFile(t, [modelSpec({ name: "filed" })]);
    const dry = await call(t.client, "applyModels", { models: [modelSpec({ name: "filed", revision: "v9" }), modelSpec({ name: "new" })], dryRun: true, prune: false });
    expect(plan(dry.changes)).to.deep.equal([
      ["filed", "CHANGE_ACTION_UPDATE", "revision"],
      ["new", "CHANGE_ACTION_CREATE", ""],
    ]);
    const refused = await callError(t.client, "applyModels", { models: [modelSpec({ name: "filed", revision: "v9" })], dryRun: false, prune: false });
    expect(refused.code).to.equal(status.FAILED_PRECONDITION);
    expect(refused.details).to.include("managed by the models file");
    expect((await call(t.client, "getModel", { name: "filed" })).model!.revision).to.equal("main");
    const same = await call(t.client, "applyModels", { models: [modelSpec({ name: "filed" })], dryRun: false, prune: false });
    expect(plan(same.changes)).to.deep.equal([["filed", "CHANGE_ACTION_UNCHANGED", ""]]);
  });
});

describe("applying the models file", () => {
  let t: TestServer;
  let server: Awaited<ReturnType<typeof startFollowingFile>>;
  beforeEach(async () => {
    server = await startFollowingFile();
    t = server.t;
  });
  afterEach(async () => {
    await server.close();
  });

  it("marks the models it lists as managed by the models file, and takes over a model registered by RPC", async () => {
    await call(t.client, "registerModel", { model: modelSpec({ name: "rpc" }) });
    const changes = await applyAsFile(t, [modelSpec({ name: "rpc" }), modelSpec({ name: "filed" })]);
    expect(changes.map((c) => [c.name, c.action, c.changedFields.join(",")])).to.deep.equal([
      ["filed", "create", ""],
      ["rpc", "update", "managed_by"],
    ]);
    const { models } = await call(t.client, "listModels", {});
    expect(models.map((m) => [m.name, m.managedBy])).to.deep.equal([
      ["filed", "models-file"],
      ["rpc", "models-file"],
    ]);
  });

  it("removes, with its cache, a model an earlier version of the file listed, and never a model registered by RPC", async () => {
    await call(t.client, "registerModel", { model: modelSpec({ name: "rpc" }) });
    await applyAsFile(t, [modelSpec({ name: "gone" })]);
    await pullOk(t.client, { name: "gone", fixtureDir: FIXTURE_DIR });
    expect(await exists(join(t.cacheRoot, "gone"))).to.equal(true);
    const changes = await applyAsFile(t, []);
    expect(changes.map((c) => [c.name, c.action])).to.deep.equal([["gone", "delete"]]);
    expect((await call(t.client, "listModels", {})).models.map((m) => m.name)).to.deep.equal(["rpc"]);
    expect(await exists(join(t.cacheRoot, "gone"))).to.equal(false);
  });

  it("refuses UpdateModel and UnregisterModel of a model the file manages, while Pull, InspectCache and DropCache work", async () => {
    await applyAsFile(t, [modelSpec({ name: "filed" })]);
    const update = await callError(t.client, "updateModel", { name: "filed", model: modelSpec({ name: "filed", revision: "v2" }) });
    expect(update.code).to.equal(status.FAILED_PRECONDITION);
    expect(update.details).to.include("managed by the models file").and.include(t.server.runtime.modelsFile!).and.include("UpdateModel");
    const unregister = await callError(t.client, "unregisterModel", { name: "filed", dropCache: true });
    expect(unregister.code).to.equal(status.FAILED_PRECONDITION);
    expect(unregister.details).to.include("managed by the models file");
    await pullOk(t.client, { name: "filed", fixtureDir: FIXTURE_DIR });
    expect((await call(t.client, "inspectCache", { name: "filed", deep: false })).footprintBytes).to.be.greaterThan(0);
    expect((await call(t.client, "dropCache", { name: "filed", force: false })).removed).to.equal(true);
    expect((await call(t.client, "getModel", { name: "filed" })).model!.revision).to.equal("main");
  });

  it("leaves models an earlier models file managed to RPC callers once the server follows none", async () => {
    await applyAsFile(t, [modelSpec({ name: "filed" })]);
    await t.restart({ modelsFile: undefined });
    const { model } = await call(t.client, "updateModel", { name: "filed", model: modelSpec({ name: "filed", revision: "v2" }) });
    expect(model!.revision).to.equal("v2");
    expect((await call(t.client, "unregisterModel", { name: "filed", dropCache: false })).removed).to.equal(true);
  });
});

describe("modelcache apply", () => {
  let t: TestServer;
  let dir: string;
  beforeEach(async () => {
    t = await startTestServer();
    dir = await mkdtemp(join(tmpdir(), "modelcache-apply-"));
  });
  afterEach(async () => {
    await t.close();
    await rm(dir, { recursive: true, force: true });
  });

  const model = (name: string, revision = "main") => `  - {name: ${name}, source: org/${name}, revision: ${revision}, task: embedding, dimensions: 8, pull_policy: never}`;

  it("prints the plan as a table: create, update with the changed fields, delete, unchanged; --dry-run changes nothing", async () => {
    await call(t.client, "registerModel", { model: modelSpec({ name: "same", source: "org/same", dimensions: 8, pullPolicy: PullPolicy.PULL_POLICY_NEVER }) });
    await call(t.client, "registerModel", { model: modelSpec({ name: "moved", source: "org/moved", dimensions: 8, pullPolicy: PullPolicy.PULL_POLICY_NEVER }) });
    await call(t.client, "registerModel", { model: modelSpec({ name: "old" }) });
    const file = join(dir, "models.yaml");
    await writeFile(file, `models:\n${model("new")}\n${model("moved", "v2")}\n${model("same")}\n`);

    const dry = await runCli(t.server.address, ["apply", "-f", file, "--dry-run", "--prune"]);
    expect(dry.code, dry.stderr).to.equal(0);
    expect(dry.stdout.split("\n").map((l) => l.trimEnd())).to.deep.equal([
      "ACTION     NAME   CHANGES",
      "update     moved  revision",
      "create     new",
      "delete     old",
      "unchanged  same",
      "dry run: 1 to create, 1 to update, 1 to delete, 1 unchanged; nothing was changed",
      "",
    ]);
    expect((await call(t.client, "listModels", {})).models.map((m) => m.name)).to.deep.equal(["moved", "old", "same"]);
    const json = await runCli(t.server.address, ["apply", "-f", file, "--dry-run", "--json"]);
    expect(json.stdout.trim().split("\n").map((line) => JSON.parse(line) as unknown)).to.deep.equal([
      { name: "moved", action: "CHANGE_ACTION_UPDATE", changedFields: ["revision"] },
      { name: "new", action: "CHANGE_ACTION_CREATE" },
      { name: "same", action: "CHANGE_ACTION_UNCHANGED" },
    ]);

    const applied = await runCli(t.server.address, ["apply", "-f", file]);
    expect(applied.code, applied.stderr).to.equal(0);
    expect(applied.stdout).to.include("applied: 1 created, 1 updated, 0 deleted, 1 unchanged");
    expect((await call(t.client, "listModels", {})).models.map((m) => m.name)).to.deep.equal(["moved", "new", "old", "same"]);
    const pruned = await runCli(t.server.address, ["apply", "-f", file, "--prune"]);
    expect(pruned.stdout).to.include("applied: 0 created, 0 updated, 1 deleted, 3 unchanged");
    expect((await call(t.client, "listModels", {})).models.map((m) => m.name)).to.deep.equal(["moved", "new", "same"]);
  });

  it("--dry-run against a server whose models file manages a listed model shows the plan with that row marked", async () => {
    const served = join(dir, "served.yaml");
    await writeFile(served, `models:\n${model("filed")}\n`);
    await t.close();
    t = await startTestServer({ modelsFile: served });
    const file = join(dir, "models.yaml");
    await writeFile(file, `models:\n${model("filed", "v2")}\n${model("new")}\n`);
    const dry = await runCli(t.server.address, ["apply", "-f", file, "--dry-run"]);
    expect(dry.code, dry.stderr).to.equal(0);
    expect(dry.stdout.split("\n").map((l) => l.trimEnd())).to.deep.equal([
      "ACTION  NAME   CHANGES   NOTE",
      "update  filed  revision  refused: managed by the models file",
      "create  new",
      "dry run: 1 to create, 0 to update, 0 to delete, 0 unchanged, 1 refused (the models file the server follows manages it: change it there); nothing was changed",
      "",
    ]);
    expect((await call(t.client, "listModels", {})).models.map((m) => m.name)).to.deep.equal(["filed"]);
  });

  it("exits non-zero on an invalid file, naming the line, and sends nothing", async () => {
    const file = join(dir, "models.yaml");
    await writeFile(file, `models:\n${model("a")}\n  - {name: b, source: org/b, revision: main, task: embedding, dimensions: 8, colour: red}\n`);
    const run = await runCli(t.server.address, ["apply", "-f", file]);
    expect(run.code).to.equal(2);
    expect(run.stderr).to.include(`${file}:3`).and.include("unknown key 'colour'");
    expect((await call(t.client, "listModels", {})).models).to.deep.equal([]);
  });
});

describe("applying while a model is being pulled", () => {
  let hub: FakeHub;
  let t: TestServer;
  beforeEach(async () => {
    hub = await FakeHub.serve("acme/tiny-minilm", FIXTURE_DIR);
    t = await startTestServer({ hubUrl: hub.url });
  });
  afterEach(async () => {
    await t.close();
    await hub.close();
  });

  it("changes the model after its pull ends, without cancelling it", async () => {
    const spec = modelSpec({ name: "a", source: "acme/tiny-minilm", pullPolicy: PullPolicy.PULL_POLICY_NEVER });
    await applyAsFile(t, [spec]);
    // slow enough that the pull is still running when the apply begins
    hub.chunkBytes = 256;
    hub.faults.bytesPerSecond = 2000;
    let started!: () => void;
    const running = new Promise<void>((resolve) => (started = resolve));
    const pulling = pull(t.client, { name: "a" }, { onEvent: (event) => event.started && started() });
    await running;
    const changes = await applyAsFile(t, [{ ...spec, revision: "v2" }]);
    expect(changes.map((c) => [c.name, c.action])).to.deep.equal([["a", "update"]]);
    // the apply waited for the pull: its install was recorded before the update
    const updated = (await call(t.client, "getModel", { name: "a" })).model!;
    expect(ModelStatus[updated.status]).to.equal("MODEL_STATUS_INSTALLED");
    const outcome = await pulling;
    expect(outcome.error).to.equal(undefined);
    expect(outcome.events.at(-1)!.completed!.manifest!.revision).to.equal("main");
    expect((await call(t.client, "getModel", { name: "a" })).model!.revision).to.equal("v2");
  });
});
