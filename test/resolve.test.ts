import { randomBytes } from "node:crypto";
import { readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { type ServiceError, status } from "@grpc/grpc-js";
import { expect } from "chai";
import { CacheStatus, ModelStatus, PullPolicy } from "../generated/modelcache/v1/model_cache.js";
import { FakeHub } from "./support/fake-hub.js";
import { captureLogs } from "./support/log-capture.js";
import { runCli } from "./support/run-cli.js";
import { makeSourceDir } from "./support/source-dir.js";
import { FIXTURE_DIR, type TestServer, call, callError, modelSpec, pull, pullOk, startTestServer } from "./support/test-server.js";

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

    for (const method of ["resolveModel", "inspectCache"] as const) {
      it(`${method} of a healthy install whose record says otherwise answers from the install and records it INSTALLED`, async () => {
        const first = await call(t.client, "resolveModel", resolveRequest(PullPolicy.PULL_POLICY_IF_MISSING));
        // asked once so the install's healthy answer is the one kept for the next calls
        expect((await call(t.client, "inspectCache", { name: "minilm", deep: false })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
        // a record that lost its install (a registry restored from an older copy)
        const { registry } = t.server.runtime;
        const record = (await registry.models.get("minilm"))!;
        const { install: _lost, ...rest } = record;
        await registry.records.run("minilm", undefined, () => registry.models.put("minilm", { ...rest, status: "registered", updatedAtMs: record.updatedAtMs + 1 }));
        expect((await call(t.client, "getModel", { name: "minilm" })).model!.status).to.equal(ModelStatus.MODEL_STATUS_REGISTERED);
        if (method === "resolveModel") {
          expect(await call(t.client, "resolveModel", resolveRequest(PullPolicy.PULL_POLICY_IF_MISSING))).to.include({ pulled: false, cacheDir: first.cacheDir });
        } else {
          expect((await call(t.client, "inspectCache", { name: "minilm", deep: false })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
        }
        const model = (await call(t.client, "getModel", { name: "minilm" })).model!;
        expect(model.status).to.equal(ModelStatus.MODEL_STATUS_INSTALLED);
        expect(model.installedAt!.getTime()).to.equal(first.manifest!.installedAt!.getTime());
      });
    }

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

    it("a ResolveModel cancelled by its client while it pulls ends the pull it started, installing nothing", async () => {
      const logs = captureLogs("info");
      await t.restart({ logger: logs.logger });
      await register("main");
      let letGo = () => undefined as void;
      hub.faults.hold.set("model.safetensors", new Promise<void>((resolve) => (letGo = resolve)));
      try {
        const outcome = new Promise<ServiceError | null>((resolve) => {
          const pending = t.client.resolveModel(resolveRequest(PullPolicy.PULL_POLICY_IF_MISSING), (err) => resolve(err));
          // cancelled once the pull is under way: the held file has been asked for
          const asked = setInterval(() => {
            if (hub.requests.some((r) => r.path.endsWith("model.safetensors"))) {
              clearInterval(asked);
              pending.cancel();
            }
          }, 5);
        });
        expect((await outcome)?.code).to.equal(status.CANCELLED);
        // the pull job ends with its only caller
        expect(await logs.seen((l) => l.msg === "pull cancelled")).to.include({ model: "minilm" });
      } finally {
        letGo();
      }
      expect((await call(t.client, "inspectCache", { name: "minilm", deep: false })).status).to.equal(CacheStatus.CACHE_STATUS_MISSING);
    });

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

    it("pulls a model installed from a local directory again from that directory, never from the hub, and names the directory once it is gone", async () => {
      await register("main");
      const FINE_TUNED = '{"fine_tuned":true}';
      const fineTune = await makeSourceDir({ "config.json": FINE_TUNED, "model.safetensors": await readFile(join(FIXTURE_DIR, "model.safetensors")) });
      try {
        await pullOk(t.client, { name: "minilm", fixtureDir: fineTune.dir });
        const install = join(t.cacheRoot, "minilm");
        await rm(install, { recursive: true, force: true });
        for (const policy of [PullPolicy.PULL_POLICY_IF_MISSING, PullPolicy.PULL_POLICY_ALWAYS]) {
          const resolved = await call(t.client, "resolveModel", resolveRequest(policy));
          expect(resolved.manifest!.resolvedCommit, `policy ${policy}`).to.equal("");
          expect(await readFile(join(resolved.cacheDir, "config.json"), "utf8")).to.equal(FINE_TUNED);
        }
        expect(hub.requests).to.deep.equal([]);

        await fineTune.cleanup();
        await rm(install, { recursive: true, force: true });
        const gone = await callError(t.client, "resolveModel", resolveRequest(PullPolicy.PULL_POLICY_IF_MISSING));
        expect(gone.code).to.equal(status.FAILED_PRECONDITION);
        expect(gone.details).to.include(fineTune.dir).and.include("no longer exists").and.include(REPO).and.include("Pull");
        expect(hub.requests).to.deep.equal([]);
        expect((await call(t.client, "getModel", { name: "minilm" })).model!.status).to.equal(ModelStatus.MODEL_STATUS_REGISTERED);

        // a Pull that asks for the hub source brings it in, and from then on the hub is the origin
        await pullOk(t.client, { name: "minilm" });
        await rm(install, { recursive: true, force: true });
        const fromHub = await call(t.client, "resolveModel", resolveRequest(PullPolicy.PULL_POLICY_IF_MISSING));
        expect(fromHub).to.include({ pulled: true });
        expect(fromHub.manifest!.resolvedCommit).to.equal(hub.commit);
      } finally {
        await fineTune.cleanup();
      }
    });

    it("joins a Pull from the hub under way of a model installed from a local directory, as that Pull asked", async () => {
      await register("main");
      const fineTune = await makeSourceDir({ "config.json": '{"fine_tuned":true}' });
      try {
        await pullOk(t.client, { name: "minilm", fixtureDir: fineTune.dir });
        await rm(join(t.cacheRoot, "minilm"), { recursive: true, force: true });
        // slow enough that the Pull is still running when ResolveModel comes
        hub.chunkBytes = 256;
        hub.faults.bytesPerSecond = 2000;
        let started!: () => void;
        const running = new Promise<void>((resolve) => (started = resolve));
        const pulling = pull(t.client, { name: "minilm" }, { onEvent: (event) => event.started && started() });
        await running;
        const resolved = await call(t.client, "resolveModel", resolveRequest(PullPolicy.PULL_POLICY_IF_MISSING));
        expect(resolved).to.include({ pulled: true });
        expect(resolved.manifest!.resolvedCommit).to.equal(hub.commit);
        expect((await pulling).error).to.equal(undefined);
      } finally {
        await fineTune.cleanup();
      }
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

describe("leases", () => {
  let t: TestServer;
  beforeEach(async () => {
    t = await startTestServer({ fixtureDir: FIXTURE_DIR, maxLeaseSeconds: 3600 });
    await call(t.client, "registerModel", { model: modelSpec() });
  });
  afterEach(() => t.close());
  const leased = async (seconds = 600) => call(t.client, "resolveModel", resolveRequest(PullPolicy.PULL_POLICY_IF_MISSING, { leaseSeconds: seconds }));

  it("survives a restart and keeps DropCache and UnregisterModel drop_cache away, naming the lease and its end, until released", async () => {
    const { leaseId, leaseExpiresAt } = await leased();
    expect(leaseId).to.match(/^[0-9a-f-]{36}$/);
    await t.restart({ fixtureDir: FIXTURE_DIR, maxLeaseSeconds: 3600 });
    expect((await call(t.client, "getModel", { name: "minilm" })).model!.leases).to.equal(1);

    const drop = await callError(t.client, "dropCache", { name: "minilm", force: false });
    expect(drop.code).to.equal(status.FAILED_PRECONDITION);
    expect(drop.details).to.include(leaseId).and.include(leaseExpiresAt!.toISOString());
    const unregister = await callError(t.client, "unregisterModel", { name: "minilm", dropCache: true });
    expect(unregister.code).to.equal(status.FAILED_PRECONDITION);
    expect(unregister.details).to.include(leaseId);
    const described = await call(t.client, "describeCache", {});
    expect(described.evictableBytes).to.equal(0);
    expect(described.models[0]!.leases).to.equal(1);
    expect((await call(t.client, "getModel", { name: "minilm" })).model!.status).to.equal(ModelStatus.MODEL_STATUS_INSTALLED);

    expect(await call(t.client, "releaseLease", { leaseId })).to.deep.equal({ released: true });
    expect(await call(t.client, "releaseLease", { leaseId })).to.deep.equal({ released: false });
    expect((await call(t.client, "getModel", { name: "minilm" })).model!.leases).to.equal(0);
    expect(await call(t.client, "dropCache", { name: "minilm", force: false })).to.include({ removed: true });
  });

  it("ListLeases lists the live leases of one model or of all, soonest end first, with their holder, and NOT_FOUND for an unknown name", async () => {
    expect(await call(t.client, "listLeases", { name: "" })).to.deep.equal({ leases: [] });
    const long = await leased(600);
    const short = await leased(60);
    const listed = await call(t.client, "listLeases", { name: "minilm" });
    expect(listed.leases.map((l) => [l.leaseId, l.name, l.expiresAt!.getTime()])).to.deep.equal([
      [short.leaseId, "minilm", short.leaseExpiresAt!.getTime()],
      [long.leaseId, "minilm", long.leaseExpiresAt!.getTime()],
    ]);
    // no token: the holder is the client's address
    expect(listed.leases[0]!.holder).to.match(/^(127\.0\.0\.1|\[::1\]|::1|ipv4:|ipv6:)/);
    await call(t.client, "releaseLease", { leaseId: short.leaseId });
    expect((await call(t.client, "listLeases", { name: "" })).leases.map((l) => l.leaseId)).to.deep.equal([long.leaseId]);
    const unknown = await callError(t.client, "listLeases", { name: "no-such-model" });
    expect(unknown.code).to.equal(status.NOT_FOUND);
  });

  /** Holds the next lease's write until released: a lease being granted stays in its write. */
  function holdNextLeaseWrite(): { reached: Promise<void>; release: () => void } {
    // Leases' own store, paused in front: the write itself is the journal's
    const leases = t.server.runtime.leases as unknown as { store(lease: unknown): Promise<void> };
    const original = leases.store;
    let reach!: () => void;
    let release!: () => void;
    const reached = new Promise<void>((resolve) => (reach = resolve));
    const gate = new Promise<void>((resolve) => (release = resolve));
    leases.store = (lease) => {
      leases.store = original;
      reach();
      return gate.then(() => original.call(leases, lease));
    };
    return { reached, release };
  }

  it("a DropCache that comes while a lease is being written is refused, naming that lease, and the lease's install stays", async () => {
    await pullOk(t.client, { name: "minilm" });
    const write = holdNextLeaseWrite();
    const resolving = leased();
    await write.reached;
    const drop = callError(t.client, "dropCache", { name: "minilm", force: false });
    const unregister = callError(t.client, "unregisterModel", { name: "minilm", dropCache: true });
    const [dropped, unregistered] = await Promise.all([drop, unregister]);
    write.release();
    const { leaseId, cacheDir } = await resolving;
    expect(dropped.code).to.equal(status.FAILED_PRECONDITION);
    expect(dropped.details).to.include(leaseId);
    expect(unregistered.code).to.equal(status.FAILED_PRECONDITION);
    expect(unregistered.details).to.include(leaseId);
    expect(JSON.parse(await readFile(join(cacheDir, "manifest.json"), "utf8"))).to.be.an("object");
    expect((await call(t.client, "getModel", { name: "minilm" })).model!).to.include({ leases: 1, status: ModelStatus.MODEL_STATUS_INSTALLED });
  });

  it("a forced DropCache that comes while a lease is being written wins: ResolveModel is ABORTED and the lease is gone, also after a restart", async () => {
    await pullOk(t.client, { name: "minilm" });
    const write = holdNextLeaseWrite();
    const resolving = callError(t.client, "resolveModel", resolveRequest(PullPolicy.PULL_POLICY_IF_MISSING, { leaseSeconds: 600 }));
    await write.reached;
    expect(await call(t.client, "dropCache", { name: "minilm", force: true })).to.include({ removed: true });
    write.release();
    const err = await resolving;
    expect(err.code).to.equal(status.ABORTED);
    expect(err.details).to.include("dropped while it was being resolved: resolve it again");
    expect(await call(t.client, "listLeases", { name: "" })).to.deep.equal({ leases: [] });
    await t.restart({ fixtureDir: FIXTURE_DIR, maxLeaseSeconds: 3600 });
    expect(await call(t.client, "listLeases", { name: "" })).to.deep.equal({ leases: [] });
    expect((await call(t.client, "getModel", { name: "minilm" })).model!).to.include({ leases: 0, status: ModelStatus.MODEL_STATUS_REGISTERED });
  });

  it("an eviction that comes while a lease is being written leaves that install: the pull that needed the room is RESOURCE_EXHAUSTED", async () => {
    await pullOk(t.client, { name: "minilm" });
    const installed = (await call(t.client, "describeCache", {})).storedBytes;
    // room for minilm and half of another model like it: that one's pull must evict minilm
    await t.restart({ fixtureDir: FIXTURE_DIR, maxLeaseSeconds: 3600, cacheMaxBytes: installed + Math.floor(installed / 2) });
    const other = await makeSourceDir({ "model.safetensors": randomBytes(installed) });
    try {
      await call(t.client, "registerModel", { model: modelSpec({ name: "other" }) });
      const write = holdNextLeaseWrite();
      const resolving = leased();
      await write.reached;
      const pulled = await pull(t.client, { name: "other", fixtureDir: other.dir });
      write.release();
      const { leaseId, cacheDir } = await resolving;
      expect(pulled.error?.code).to.equal(status.RESOURCE_EXHAUSTED);
      expect(leaseId).to.not.equal("");
      expect(JSON.parse(await readFile(join(cacheDir, "manifest.json"), "utf8"))).to.be.an("object");
      expect((await call(t.client, "getModel", { name: "minilm" })).model!).to.include({ leases: 1, status: ModelStatus.MODEL_STATUS_INSTALLED });
    } finally {
      await other.cleanup();
    }
  });

  it("a model's leases end with it: a name registered again after an unregistration a crash interrupted starts without them", async () => {
    await leased();
    // the crash came right after UnregisterModel's commit point
    const record = await t.server.runtime.registry.models.get("minilm");
    await t.server.runtime.registry.models.put("minilm", { ...record!, unregistering: true });
    await t.restart({ fixtureDir: FIXTURE_DIR, maxLeaseSeconds: 3600 });
    await call(t.client, "registerModel", { model: modelSpec() });
    expect((await call(t.client, "getModel", { name: "minilm" })).model!.leases).to.equal(0);
    expect(await call(t.client, "listLeases", { name: "" })).to.deep.equal({ leases: [] });
    expect(await call(t.client, "dropCache", { name: "minilm", force: false })).to.include({ removed: false });
  });

  it("ends every lease with a forced DropCache", async () => {
    await leased();
    await leased();
    expect((await call(t.client, "getModel", { name: "minilm" })).model!.leases).to.equal(2);
    expect(await call(t.client, "dropCache", { name: "minilm", force: true })).to.include({ removed: true });
    const model = (await call(t.client, "getModel", { name: "minilm" })).model!;
    expect(model).to.include({ leases: 0, status: ModelStatus.MODEL_STATUS_REGISTERED });
  });

  it("caps a lease at --max-lease-seconds, lets it expire, and refuses an empty lease id", async () => {
    await t.restart({ fixtureDir: FIXTURE_DIR, maxLeaseSeconds: 1 });
    const before = Date.now();
    const { leaseExpiresAt, leaseId } = await leased(3600);
    expect(leaseExpiresAt!.getTime()).to.be.at.most(Date.now() + 1000).and.at.least(before + 1000 - 1);
    await new Promise((resolve) => setTimeout(resolve, leaseExpiresAt!.getTime() - Date.now() + 50));
    expect((await call(t.client, "getModel", { name: "minilm" })).model!.leases).to.equal(0);
    expect(await call(t.client, "releaseLease", { leaseId })).to.deep.equal({ released: false });
    expect(await call(t.client, "dropCache", { name: "minilm", force: false })).to.include({ removed: true });
    expect(await call(t.client, "releaseLease", { leaseId: "no-such-lease" })).to.deep.equal({ released: false });
    const empty = await callError(t.client, "releaseLease", { leaseId: "" });
    expect(empty.code).to.equal(status.INVALID_ARGUMENT);
    expect(empty.details).to.include("lease_id");
  });

  it("a re-resolve with a lease renews by issuing a new one, and a lease of 0 is none", async () => {
    const first = await leased();
    const second = await leased();
    expect(second.leaseId).to.not.equal(first.leaseId);
    const none = await leased(0);
    expect(none.leaseId).to.equal("");
    expect(none.leaseExpiresAt).to.equal(undefined);
    // a leased answer is the answer without a lease, and its lease
    const { leaseId, leaseExpiresAt, ...rest } = second;
    expect(leaseId).to.match(/^[0-9a-f-]{36}$/);
    expect(leaseExpiresAt!.getTime()).to.be.above(Date.now());
    expect({ ...rest, leaseId: "", leaseExpiresAt: undefined }).to.deep.equal(none);
    expect(rest.manifest!.files.length).to.be.above(0);
    expect((await call(t.client, "getModel", { name: "minilm" })).model!.leases).to.equal(2);
  });

  it("'modelcache resolve' prints the path and the lease, 'leases release' ends it, and a bad policy or duration is a usage error", async () => {
    const cli = (...args: string[]) => runCli(t.server.address, args);
    const resolved = await cli("resolve", "minilm", "--policy", "if-missing", "--lease", "1h");
    expect(resolved.code, resolved.stderr).to.equal(0);
    const [path, leaseLine] = resolved.stdout.trim().split("\n");
    expect(path).to.equal(join(t.cacheRoot, "minilm"));
    const leaseId = /^lease (\S+) until \S+$/.exec(leaseLine ?? "")?.[1];
    expect(leaseId).to.be.a("string");
    expect((await call(t.client, "getModel", { name: "minilm" })).model!.leases).to.equal(1);
    expect((await cli("drop", "minilm")).code).to.equal(1);
    const released = await cli("leases", "release", leaseId!);
    expect(released.code, released.stderr).to.equal(0);
    expect((await cli("leases", "release", leaseId!)).code).to.equal(3);
    expect((await cli("resolve", "minilm", "--lease", "1 hour")).code).to.equal(2);
    expect((await cli("resolve", "minilm", "--policy", "sometimes")).code).to.equal(2);
    expect((await cli("drop", "minilm")).code).to.equal(0);
  });
});
