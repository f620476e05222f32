// The Leases class on a real registry (LevelDB in a temp dir) with a clock the
// test moves: expiry and the sweep of expired records, and the order between
// a grant and a removal of the install, without waiting for time to pass.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { type Lease, Leases } from "../src/consumers/leases.js";
import { ModelCacheError } from "../src/errors.js";
import { type Registry, openRegistry } from "../src/registry/open-registry.js";

describe("Leases", () => {
  let dataDir: string;
  let registry: Registry;
  let nowMs: number;
  const clock = () => nowMs;
  const stored = async () => (await registry.sublevel<Lease>("leases").keys().all()).length;
  beforeEach(async () => {
    dataDir = await mkdtemp(join(tmpdir(), "modelcache-leases-"));
    registry = await openRegistry(dataDir);
    nowMs = Date.parse("2026-01-01T00:00:00Z");
  });
  afterEach(async () => {
    await registry.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  it("sweeps expired leases from memory and from LevelDB, also of models nobody resolves again", async () => {
    const leases = new Leases(registry.sublevel<Lease>("leases"), 3600, clock);
    await leases.grant("a", 1, "svc");
    await leases.grant("b", 1, "svc");
    const lasting = await leases.grant("b", 60, "svc");
    nowMs += 1000;
    expect(leases.list().map((l) => l.id)).to.deep.equal([lasting.id]);
    // expired, but still held until swept
    expect(leases.held).to.equal(3);
    expect(await stored()).to.equal(3);
    expect(await leases.sweep()).to.equal(2);
    expect(leases.held).to.equal(1);
    expect(await stored()).to.equal(1);
    expect(await leases.sweep()).to.equal(0);
  });

  it("keeps leases whose ending could not be stored: they still hold the install, as they would after a restart", async () => {
    const leases = new Leases(registry.sublevel<Lease>("leases"), 3600, clock);
    const first = await leases.grant("a", 60, "svc");
    await leases.grant("a", 60, "svc");
    // every write fails from here on
    await registry.close();
    const ended = await leases.endAll("a").then(() => "ended", (err: unknown) => err);
    expect(ended).to.be.instanceOf(Error);
    expect(leases.count("a")).to.equal(2);
    const released = await leases.release(first.id).then(() => "released", (err: unknown) => err);
    expect(released).to.be.instanceOf(Error);
    expect(leases.list("a").map((l) => l.id)).to.include(first.id);
  });

  it("sweeps on a timer until close", async () => {
    const leases = new Leases(registry.sublevel<Lease>("leases"), 3600, clock);
    await leases.grant("a", 1, "svc");
    nowMs += 1000;
    const swept = new Promise<number>((resolve, reject) => leases.startSweeping(1, { swept: (count) => count > 0 && resolve(count), failed: reject }));
    expect(await swept).to.equal(1);
    await leases.close();
    expect(leases.held).to.equal(0);
    expect(await stored()).to.equal(0);
  });

  it("refuses a grant while a removal of the model's install is under way with ABORTED, and a removal while a lease is being written", async () => {
    const leases = new Leases(registry.sublevel<Lease>("leases"), 3600, clock);
    let finishRemoval!: () => void;
    const removing = leases.removing("a", { refuse: { operation: "DropCache", howToForce: "set force" } }, () => new Promise<void>((resolve) => (finishRemoval = resolve)));
    const during = await leases.grant("a", 60, "svc").then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(during).to.be.instanceOf(ModelCacheError).and.include({ kind: "aborted" });
    expect((during as Error).message).to.include("dropped while it was being resolved: resolve it again");
    // another model is not concerned
    await leases.grant("b", 60, "svc");
    finishRemoval();
    await removing;

    const granting = leases.grant("a", 60, "svc");
    // the lease is not yet written, yet it counts
    const refused = await leases.removing("a", { refuse: { operation: "DropCache", howToForce: "set force" } }, async () => "removed").then(
      () => undefined,
      (err: unknown) => err,
    );
    const lease = await granting;
    expect(refused).to.be.instanceOf(ModelCacheError).and.include({ kind: "failed_precondition" });
    expect((refused as Error).message).to.include(lease.id);
    expect(await stored()).to.equal(2);
  });

  it("forgets at load the leases that expired and those of models no longer registered", async () => {
    const leases = new Leases(registry.sublevel<Lease>("leases"), 3600, clock);
    await leases.grant("kept", 60, "svc");
    await leases.grant("expired", 1, "svc");
    await leases.grant("unregistered", 60, "svc");
    nowMs += 1000;
    const loaded = await new Leases(registry.sublevel<Lease>("leases"), 3600, clock).load(async (name) => name !== "unregistered");
    expect(loaded.list().map((l) => l.name)).to.deep.equal(["kept"]);
    expect(await stored()).to.equal(1);
  });
});
