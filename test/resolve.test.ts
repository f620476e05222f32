import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import { expect } from "chai";
import { ModelStatus, PullPolicy } from "../generated/modelcache/v1/model_cache.js";
import { FakeHub } from "./support/fake-hub.js";
import { FIXTURE_DIR, type TestServer, call, callError, modelSpec, pullOk, startTestServer } from "./support/test-server.js";

const REPO = "acme/tiny-minilm";
const resolveRequest = (pullPolicy: PullPolicy, extra: { leaseSeconds?: number; name?: string } = {}) => ({ name: extra.name ?? "minilm", pullPolicy, leaseSeconds: extra.leaseSeconds ?? 0, credentialAlias: "" });

describe("pins and last use", () => {
  let t: TestServer;
  beforeEach(async () => {
    t = await startTestServer({ fixtureDir: FIXTURE_DIR });
  });
  afterEach(() => t.close());

  it("keeps pinned across a restart and records the last completed Pull and ResolveModel", async () => {
    await call(t.client, "registerModel", { model: modelSpec({ pinned: true }) });
    const registered = (await call(t.client, "getModel", { name: "minilm" })).model!;
    expect(registered.pinned).to.equal(true);
    expect(registered.lastUsedAt).to.equal(undefined);

    await pullOk(t.client, { name: "minilm" });
    const pulled = (await call(t.client, "getModel", { name: "minilm" })).model!.lastUsedAt!;
    expect(pulled).to.be.instanceOf(Date);

    await new Promise((resolve) => setTimeout(resolve, 5));
    await call(t.client, "resolveModel", resolveRequest(PullPolicy.PULL_POLICY_NEVER));
    await t.restart();
    const after = (await call(t.client, "getModel", { name: "minilm" })).model!;
    expect(after.pinned).to.equal(true);
    expect(after.lastUsedAt!.getTime()).to.be.above(pulled.getTime());
    const described = await call(t.client, "describeCache", {});
    expect(described.models.map((m) => ({ name: m.name, pinned: m.pinned, lastUsedAt: m.lastUsedAt!.getTime() }))).to.deep.equal([{ name: "minilm", pinned: true, lastUsedAt: after.lastUsedAt!.getTime() }]);
    // a pinned install is not evictable
    expect(described.evictableBytes).to.equal(0);
  });
});

describe("ResolveModel", () => {
  describe("from a source directory", () => {
    let t: TestServer;
    beforeEach(async () => {
      t = await startTestServer({ fixtureDir: FIXTURE_DIR });
      await call(t.client, "registerModel", { model: modelSpec() });
    });
    afterEach(() => t.close());

    it("NEVER refuses without a healthy install, naming the policy, and installs nothing", async () => {
      const err = await callError(t.client, "resolveModel", resolveRequest(PullPolicy.PULL_POLICY_NEVER));
      expect(err.code).to.equal(status.FAILED_PRECONDITION);
      expect(err.details).to.include("PULL_POLICY_NEVER");
      expect((await call(t.client, "getModel", { name: "minilm" })).model!.status).to.equal(ModelStatus.MODEL_STATUS_REGISTERED);
    });

    it("IF_MISSING pulls a missing model, then returns the same install without pulling", async () => {
      const first = await call(t.client, "resolveModel", resolveRequest(PullPolicy.PULL_POLICY_IF_MISSING));
      expect(first).to.include({ name: "minilm", pulled: true, revalidated: true, cacheDir: join(t.cacheRoot, "minilm"), leaseId: "" });
      expect(JSON.parse(await readFile(join(first.cacheDir, "config.json"), "utf8"))).to.be.an("object");
      const second = await call(t.client, "resolveModel", resolveRequest(PullPolicy.PULL_POLICY_UNSPECIFIED));
      expect(second).to.include({ pulled: false, cacheDir: first.cacheDir });
      expect(second.manifest!.installedAt!.getTime()).to.equal(first.manifest!.installedAt!.getTime());
      const never = await call(t.client, "resolveModel", resolveRequest(PullPolicy.PULL_POLICY_NEVER));
      expect(never.pulled).to.equal(false);
    });

    it("refuses an unknown model with NOT_FOUND and a policy out of range with INVALID_ARGUMENT", async () => {
      const missing = await callError(t.client, "resolveModel", resolveRequest(PullPolicy.PULL_POLICY_IF_MISSING, { name: "nope" }));
      expect(missing.code).to.equal(status.NOT_FOUND);
      const bad = await callError(t.client, "resolveModel", resolveRequest(9 as PullPolicy));
      expect(bad.code).to.equal(status.INVALID_ARGUMENT);
      expect(bad.details).to.include("pull_policy");
      expect((await call(t.client, "getModel", { name: "minilm" })).model!.status).to.equal(ModelStatus.MODEL_STATUS_REGISTERED);
    });
  });

  describe("from a hub", () => {
    let hub: FakeHub;
    let t: TestServer;
    beforeEach(async () => {
      hub = await FakeHub.serve(REPO, FIXTURE_DIR);
      t = await startTestServer({ hubUrl: hub.url, progressIntervalMs: 0 });
    });
    afterEach(async () => {
      await t.close();
      await hub.close();
    });
    const register = (revision: string) => call(t.client, "registerModel", { model: modelSpec({ source: REPO, revision }) });
    const contentRequests = () => hub.requests.filter((r) => r.path.includes("/resolve/") || r.path.startsWith("/lfs/")).length;

    it("IF_MISSING returns an install without asking the hub", async () => {
      await register("main");
      await pullOk(t.client, { name: "minilm" });
      const before = hub.requests.length;
      const resolved = await call(t.client, "resolveModel", resolveRequest(PullPolicy.PULL_POLICY_IF_MISSING));
      expect(resolved.pulled).to.equal(false);
      expect(hub.requests.length).to.equal(before);
    });

    it("ALWAYS returns the install when the branch still names its commit, and pulls when the branch moved", async () => {
      await register("main");
      await pullOk(t.client, { name: "minilm" });
      const downloads = contentRequests();
      const same = await call(t.client, "resolveModel", resolveRequest(PullPolicy.PULL_POLICY_ALWAYS));
      expect(same).to.include({ pulled: false, revalidated: true });
      expect(same.manifest!.resolvedCommit).to.equal(hub.commit);
      expect(contentRequests()).to.equal(downloads);

      const moved = hub.commitFile("config.json", '{"moved":true}');
      const after = await call(t.client, "resolveModel", resolveRequest(PullPolicy.PULL_POLICY_ALWAYS));
      expect(after).to.include({ pulled: true, revalidated: true });
      expect(after.manifest!.resolvedCommit).to.equal(moved);
      expect(JSON.parse(await readFile(join(after.cacheDir, "config.json"), "utf8"))).to.deep.equal({ moved: true });
    });

    it("ALWAYS with a 40-hex commit installed needs no network", async () => {
      await register(hub.commit);
      await pullOk(t.client, { name: "minilm" });
      await hub.close();
      const before = hub.requests.length;
      const resolved = await call(t.client, "resolveModel", resolveRequest(PullPolicy.PULL_POLICY_ALWAYS));
      expect(resolved).to.include({ pulled: false, revalidated: true });
      expect(hub.requests.length).to.equal(before);
      hub = await FakeHub.serve(REPO, FIXTURE_DIR);
    });

    it("ALWAYS with the hub unreachable returns the install unrevalidated, and is UNAVAILABLE without one", async () => {
      await register("main");
      await pullOk(t.client, { name: "minilm" });
      await hub.close();
      const resolved = await call(t.client, "resolveModel", resolveRequest(PullPolicy.PULL_POLICY_ALWAYS));
      expect(resolved).to.include({ pulled: false, revalidated: false, cacheDir: join(t.cacheRoot, "minilm") });

      await call(t.client, "dropCache", { name: "minilm", force: false });
      const err = await callError(t.client, "resolveModel", resolveRequest(PullPolicy.PULL_POLICY_ALWAYS));
      expect(err.code).to.equal(status.UNAVAILABLE);
      hub = await FakeHub.serve(REPO, FIXTURE_DIR);
    });
  });
});
