import { status } from "@grpc/grpc-js";
import { expect } from "chai";
import {
  Engine,
  ModelStatus,
  PullPolicy,
  Task,
  TrustPolicy,
} from "../generated/modelcache/v1/model_cache.js";
import { FIXTURE_DIR, type TestServer, call, callError, modelSpec, pullOk, startTestServer } from "./support/test-server.js";

describe("registry", () => {
  let t: TestServer;
  beforeEach(async () => {
    t = await startTestServer();
  });
  afterEach(() => t.close());

  describe("RegisterModel", () => {
    it("registers a model with defaults filled in, status REGISTERED and timestamps", async () => {
      const before = Date.now();
      const { model } = await call(t.client, "registerModel", { model: modelSpec() });
      expect(model).to.include({
        name: "minilm",
        provider: "local",
        source: "sentence-transformers/all-MiniLM-L6-v2",
        revision: "main",
        task: Task.TASK_EMBEDDING,
        dimensions: 384,
        engine: Engine.ENGINE_CANDLE,
        pullPolicy: PullPolicy.PULL_POLICY_IF_MISSING,
        trustPolicy: TrustPolicy.TRUST_POLICY_DISABLED,
        credentialAlias: "",
        status: ModelStatus.MODEL_STATUS_REGISTERED,
        cacheDir: "",
        cacheSizeBytes: 0,
      });
      expect(model!.createdAt!.getTime()).to.be.at.least(before - 1000);
      expect(model!.updatedAt!.getTime()).to.equal(model!.createdAt!.getTime());
      expect(model!.installedAt).to.equal(undefined);
    });

    it("keeps explicit policies and the credential alias", async () => {
      const { model } = await call(t.client, "registerModel", {
        model: modelSpec({
          pullPolicy: PullPolicy.PULL_POLICY_NEVER,
          trustPolicy: TrustPolicy.TRUST_POLICY_ALLOW_REMOTE_CODE,
          acknowledgeRemoteCodeRisk: true,
          credentialAlias: "hf_prod-1",
          engine: Engine.ENGINE_CANDLE,
        }),
      });
      expect(model).to.include({
        pullPolicy: PullPolicy.PULL_POLICY_NEVER,
        trustPolicy: TrustPolicy.TRUST_POLICY_ALLOW_REMOTE_CODE,
        credentialAlias: "hf_prod-1",
      });
    });

    it("refuses a name that is already registered with ALREADY_EXISTS", async () => {
      await call(t.client, "registerModel", { model: modelSpec() });
      const err = await callError(t.client, "registerModel", { model: modelSpec({ dimensions: 768 }) });
      expect(err.code).to.equal(status.ALREADY_EXISTS);
      expect(err.details).to.include("'minilm' is already registered");
    });

    const invalid: [string, Parameters<typeof modelSpec>[0], string][] = [
      ["an empty name", { name: "" }, "model.name"],
      ["a name with a dot", { name: "mini.lm" }, "model.name"],
      ["a name with a space", { name: "mini lm" }, "model.name"],
      ["a name with a slash", { name: "mini/lm" }, "model.name"],
      ["a name of 129 characters", { name: "a".repeat(129) }, "model.name"],
      ["a missing source", { source: "" }, "model.source"],
      ["a source with whitespace", { source: "sentence transformers/x" }, "model.source"],
      ["a source that is a relative path", { source: "../../etc" }, "model.source"],
      ["a source that is an absolute path", { source: "/etc/passwd" }, "model.source"],
      ["a source of three parts", { source: "a/b/c" }, "model.source"],
      ["a source with '..' inside", { source: "org/a..b" }, "model.source"],
      ["a source starting with '-'", { source: "-org/model" }, "model.source"],
      ["a repo id of 97 characters", { source: `org/${"m".repeat(93)}` }, "model.source"],
      ["an s3 location with '..'", { source: "s3://bucket/models/../other" }, "model.source"],
      ["an s3 location with an invalid bucket", { source: "s3://Bucket_Name/x" }, "model.source"],
      ["a missing revision", { revision: "" }, "model.revision"],
      ["a revision with whitespace", { revision: "ma in" }, "model.revision"],
      ["zero dimensions", { dimensions: 0 }, "model.dimensions"],
      ["65537 dimensions", { dimensions: 65537 }, "model.dimensions"],
      ["an unknown engine", { engine: 9 as Engine }, "model.engine"],
      ["an unknown pull policy", { pullPolicy: 9 as PullPolicy }, "model.pull_policy"],
      ["an unknown trust policy", { trustPolicy: 9 as TrustPolicy }, "model.trust_policy"],
      ["a credential alias with a dot", { credentialAlias: "hf.prod" }, "model.credential_alias"],
      ["remote code without the acknowledgement", { trustPolicy: TrustPolicy.TRUST_POLICY_ALLOW_REMOTE_CODE }, "acknowledge_remote_code_risk"],
    ];
    for (const [what, overrides, field] of invalid) {
      it(`refuses ${what} with INVALID_ARGUMENT naming ${field}`, async () => {
        const err = await callError(t.client, "registerModel", { model: modelSpec(overrides) });
        expect(err.code).to.equal(status.INVALID_ARGUMENT);
        expect(err.details).to.include(field);
        const { models } = await call(t.client, "listModels", {});
        expect(models).to.have.length(0);
      });
    }

    it("accepts a source in each shape: owner/name, a bare name, a 96-character repo id, an s3:// location", async () => {
      const sources = ["sentence-transformers/all-MiniLM-L6-v2", "gpt2", `org/${"m".repeat(92)}`, "BAAI/bge-small-en-v1.5", "s3://my-bucket/models/minilm", "s3://my.bucket"];
      for (const [i, source] of sources.entries()) await call(t.client, "registerModel", { model: modelSpec({ name: `m${i}`, source }) });
      const { models } = await call(t.client, "listModels", {});
      expect(models.map((m) => m.source).sort()).to.deep.equal([...sources].sort());
    });

    it("accepts the boundaries: a 128-character name and 1 and 65536 dimensions", async () => {
      await call(t.client, "registerModel", { model: modelSpec({ name: "A_-9".repeat(32), dimensions: 1 }) });
      await call(t.client, "registerModel", { model: modelSpec({ name: "wide", dimensions: 65536 }) });
      const { models } = await call(t.client, "listModels", {});
      expect(models.map((m) => m.dimensions).sort((a, b) => a - b)).to.deep.equal([1, 65536]);
    });

    for (const [what, task] of [["unset", Task.TASK_UNSPECIFIED], ["unknown", 7 as Task]] as const) {
      it(`refuses an ${what} task with INVALID_ARGUMENT saying only embedding is supported`, async () => {
        const err = await callError(t.client, "registerModel", { model: modelSpec({ task }) });
        expect(err.code).to.equal(status.INVALID_ARGUMENT);
        expect(err.details).to.include("model.task").and.include("embedding");
      });
    }

    it("refuses a request without a model", async () => {
      const err = await callError(t.client, "registerModel", {});
      expect(err.code).to.equal(status.INVALID_ARGUMENT);
      expect(err.details).to.include("model.name");
    });

    it("quotes at most 80 characters of a bad value", async () => {
      const err = await callError(t.client, "registerModel", { model: modelSpec({ name: `${"x".repeat(5000)}.` }) });
      expect(err.code).to.equal(status.INVALID_ARGUMENT);
      expect(err.details).to.include("x".repeat(80)).and.not.include("x".repeat(81));
    });
  });

  describe("GetModel and ListModels", () => {
    it("gets a registered model and NOT_FOUND for an unknown one", async () => {
      await call(t.client, "registerModel", { model: modelSpec() });
      const { model } = await call(t.client, "getModel", { name: "minilm" });
      expect(model!.name).to.equal("minilm");
      const err = await callError(t.client, "getModel", { name: "nope" });
      expect(err.code).to.equal(status.NOT_FOUND);
      expect(err.details).to.equal("local AI model 'nope' is not registered");
    });

    it("refuses an invalid name with INVALID_ARGUMENT before looking it up", async () => {
      const err = await callError(t.client, "getModel", { name: "../etc" });
      expect(err.code).to.equal(status.INVALID_ARGUMENT);
      expect(err.details).to.include("name");
    });

    it("lists models sorted by name", async () => {
      for (const name of ["zeta", "Alpha", "mid_1", "beta"]) await call(t.client, "registerModel", { model: modelSpec({ name }) });
      const { models } = await call(t.client, "listModels", {});
      expect(models.map((m) => m.name)).to.deep.equal(["Alpha", "beta", "mid_1", "zeta"]);
    });
  });

  describe("UpdateModel", () => {
    it("replaces the whole spec, keeps created_at and bumps updated_at", async () => {
      const { model: registered } = await call(t.client, "registerModel", {
        model: modelSpec({ pullPolicy: PullPolicy.PULL_POLICY_ALWAYS, credentialAlias: "hf" }),
      });
      const { model } = await call(t.client, "updateModel", { name: "minilm", model: modelSpec({ name: "", revision: "v2", dimensions: 768 }) });
      expect(model).to.include({ revision: "v2", dimensions: 768, pullPolicy: PullPolicy.PULL_POLICY_IF_MISSING, credentialAlias: "" });
      expect(model!.createdAt!.getTime()).to.equal(registered!.createdAt!.getTime());
      expect(model!.updatedAt!.getTime()).to.be.above(registered!.updatedAt!.getTime());
      const { model: stored } = await call(t.client, "getModel", { name: "minilm" });
      expect(stored).to.deep.equal(model);
    });

    it("is NOT_FOUND for an unknown name", async () => {
      const err = await callError(t.client, "updateModel", { name: "ghost", model: modelSpec({ name: "ghost" }) });
      expect(err.code).to.equal(status.NOT_FOUND);
      expect(err.details).to.include("'ghost' is not registered");
    });

    it("refuses a spec whose name does not match the request's", async () => {
      await call(t.client, "registerModel", { model: modelSpec() });
      const err = await callError(t.client, "updateModel", { name: "minilm", model: modelSpec({ name: "other" }) });
      expect(err.code).to.equal(status.INVALID_ARGUMENT);
      expect(err.details).to.include("does not match");
    });

    it("validates the new spec like RegisterModel and keeps the old one on refusal", async () => {
      await call(t.client, "registerModel", { model: modelSpec() });
      const err = await callError(t.client, "updateModel", { name: "minilm", model: modelSpec({ dimensions: 0 }) });
      expect(err.code).to.equal(status.INVALID_ARGUMENT);
      const { model } = await call(t.client, "getModel", { name: "minilm" });
      expect(model!.dimensions).to.equal(384);
    });

    it("with if_updated_at applies only while the model is unchanged since that read: a lost race is ABORTED and keeps the other change", async () => {
      await call(t.client, "registerModel", { model: modelSpec() });
      const { model: read } = await call(t.client, "getModel", { name: "minilm" });
      // another client changes the model between this read and the write
      await call(t.client, "updateModel", { name: "minilm", model: modelSpec({ dimensions: 768 }), ifUpdatedAt: read!.updatedAt });
      const err = await callError(t.client, "updateModel", { name: "minilm", model: modelSpec({ revision: "v2" }), ifUpdatedAt: read!.updatedAt });
      expect(err.code).to.equal(status.ABORTED);
      expect(err.details).to.include("if_updated_at").and.include("GetModel");
      const { model: now } = await call(t.client, "getModel", { name: "minilm" });
      expect(now!.dimensions).to.equal(768);
      expect(now!.revision).to.equal("main");
      // read again, the update applies
      const { model: updated } = await call(t.client, "updateModel", { name: "minilm", model: modelSpec({ dimensions: 768, revision: "v2" }), ifUpdatedAt: now!.updatedAt });
      expect(updated!.revision).to.equal("v2");
    });

    it("never touches the install: the manifest still shows the revision on disk", async () => {
      await call(t.client, "registerModel", { model: modelSpec() });
      await pullOk(t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
      const { model } = await call(t.client, "updateModel", { name: "minilm", model: modelSpec({ revision: "v2" }) });
      expect(model!.status).to.equal(ModelStatus.MODEL_STATUS_INSTALLED);
      expect(model!.cacheDir).to.not.equal("");
      const inspected = await call(t.client, "inspectCache", { name: "minilm", deep: false });
      expect(inspected.manifest!.revision).to.equal("main");
    });
  });

  describe("UnregisterModel", () => {
    it("removes a registered model", async () => {
      await call(t.client, "registerModel", { model: modelSpec() });
      expect(await call(t.client, "unregisterModel", { name: "minilm", dropCache: false })).to.deep.equal({ removed: true });
      const err = await callError(t.client, "getModel", { name: "minilm" });
      expect(err.code).to.equal(status.NOT_FOUND);
    });

    it("is NOT_FOUND for an unknown name", async () => {
      const err = await callError(t.client, "unregisterModel", { name: "ghost", dropCache: true });
      expect(err.code).to.equal(status.NOT_FOUND);
    });
  });

  it("keeps every model across a server restart on the same data dir", async () => {
    await call(t.client, "registerModel", { model: modelSpec() });
    await call(t.client, "registerModel", { model: modelSpec({ name: "other", credentialAlias: "hf" }) });
    const { models: before } = await call(t.client, "listModels", {});
    await t.restart();
    const { models: after } = await call(t.client, "listModels", {});
    expect(after).to.deep.equal(before);
  });
});
