// The Leases class on a real lease journal and registry (files and LevelDB in
// a temp dir) with a clock the test moves: expiry and the sweep of expired
// leases, the order between a grant and a removal of the install, and what a
// restart reads back (also after a torn write, a killed rewrite, or from an
// earlier version's LevelDB records), without waiting for time to pass.
import { execFile } from "node:child_process";
import { appendFile, lstat, mkdir, mkdtemp, open, readFile, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { expect } from "chai";
import { PullPolicy } from "../generated/modelcache/v1/model_cache.js";
import { LEASE_JOURNAL_FILE, LeaseJournal, type LeaseJournalOptions } from "../src/consumers/lease-journal.js";
import { type Lease, Leases } from "../src/consumers/leases.js";
import { ModelCacheError } from "../src/errors.js";
import { type Registry, openRegistry } from "../src/registry/open-registry.js";
import { spawnServer } from "./support/child-server.js";
import { FIXTURE_DIR, call, modelSpec, pullOk } from "./support/test-server.js";

const run = promisify(execFile);

describe("Leases", () => {
  let dataDir: string;
  let registry: Registry;
  let nowMs: number;
  const clock = () => nowMs;
  let journal: LeaseJournal;
  /** every journal a test opened, closed after it (a test may leave one open, as a killed server would) */
  const opened: LeaseJournal[] = [];
  const opening = (options: LeaseJournalOptions = {}) => {
    journal = new LeaseJournal(dataDir, { now: clock, ...options });
    opened.push(journal);
    return journal;
  };
  /** the leases a restart would read from the journal, expired ones included */
  const stored = async () => (await new LeaseJournal(dataDir).read()).leases.length;
  async function started(options: LeaseJournalOptions = {}, isRegistered = async (_name: string) => true): Promise<Leases> {
    const leases = new Leases(opening(options), 3600, clock);
    await leases.load(isRegistered, registry.sublevel<Lease>("leases"));
    return leases;
  }
  beforeEach(async () => {
    dataDir = await mkdtemp(join(tmpdir(), "modelcache-leases-"));
    registry = await openRegistry(dataDir);
    nowMs = Date.parse("2026-01-01T00:00:00Z");
  });
  afterEach(async () => {
    for (const each of opened.splice(0)) await each.close();
    await registry.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  it("sweeps expired leases from memory, also of models nobody resolves again, and the journal's next rewrite drops them", async () => {
    const leases = await started();
    await leases.grant("a", 1, "svc");
    await leases.grant("b", 1, "svc");
    const lasting = await leases.grant("b", 60, "svc");
    nowMs += 1000;
    expect(leases.list().map((l) => l.id)).to.deep.equal([lasting.id]);
    // expired, but still held until swept
    expect(leases.held).to.equal(3);
    expect(await stored()).to.equal(3);
    expect(leases.sweep()).to.equal(2);
    expect(leases.held).to.equal(1);
    expect(leases.sweep()).to.equal(0);
    const before = journal.bytes;
    await journal.rewrite();
    expect(journal.bytes).to.be.below(before);
    expect(await stored()).to.equal(1);
  });

  it("keeps leases whose ending could not be stored: they still hold the install, as they would after a restart", async () => {
    const leases = await started();
    const first = await leases.grant("a", 60, "svc");
    await leases.grant("a", 60, "svc");
    // every write fails from here on
    await journal.close();
    const ended = await leases.endAll("a").then(() => "ended", (err: unknown) => err);
    expect(ended).to.be.instanceOf(Error);
    expect(leases.count("a")).to.equal(2);
    const released = await leases.release(first.id).then(() => "released", (err: unknown) => err);
    expect(released).to.be.instanceOf(Error);
    expect(leases.list("a").map((l) => l.id)).to.include(first.id);
  });

  it("sweeps on a timer until close", async () => {
    const leases = await started();
    await leases.grant("a", 1, "svc");
    nowMs += 1000;
    const swept = new Promise<number>((resolve) => leases.startSweeping(1, (count) => count > 0 && resolve(count)));
    expect(await swept).to.equal(1);
    await leases.close();
    expect(leases.held).to.equal(0);
  });

  it("refuses a grant while a removal of the model's install is under way with ABORTED, and a removal while a lease is being written", async () => {
    const leases = await started();
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
    const leases = await started();
    await leases.grant("kept", 60, "svc");
    await leases.grant("expired", 1, "svc");
    await leases.grant("unregistered", 60, "svc");
    await leases.close();
    nowMs += 1000;
    const loaded = await started({}, async (name) => name !== "unregistered");
    expect(loaded.list().map((l) => l.name)).to.deep.equal(["kept"]);
    expect(await stored()).to.equal(1);
  });

  it("reads back after a restart every lease granted and not ended, and none released or ended", async () => {
    const leases = await started();
    const kept = await leases.grant("a", 60, "svc-1");
    const released = await leases.grant("a", 60, "svc-2");
    await leases.grant("b", 60, "svc-3");
    expect(await leases.release(released.id)).to.equal(true);
    expect(await leases.endAll("b")).to.equal(1);
    // no close: the journal is read as a killed process left it
    const again = await started();
    expect(again.list()).to.deep.equal([kept]);
  });

  it("skips a torn last line (a write a power cut or a full disk cut short), keeps the rest, and starts the journal anew without it", async () => {
    const leases = await started();
    const kept = await leases.grant("a", 60, "svc");
    await leases.close();
    const path = join(dataDir, LEASE_JOURNAL_FILE);
    await appendFile(path, '{"put":{"id":"torn","name":"a","grantedAt');
    const again = new Leases(opening(), 3600, clock);
    expect(await again.load(async () => true)).to.deep.include({ loaded: 1, skipped: 1 });
    expect(again.list()).to.deep.equal([kept]);
    expect(await readFile(path, "utf8")).to.not.include("torn");
    // a lease granted after the restart is a line of its own
    const next = await again.grant("a", 60, "svc");
    expect((await new LeaseJournal(dataDir).read()).leases.map((l) => l.id).sort()).to.deep.equal([kept.id, next.id].sort());
  });

  it("reads the journal a rewrite killed before its rename would have replaced, and replaces the temp file it left", async () => {
    const leases = await started();
    const kept = await leases.grant("a", 60, "svc");
    await leases.close();
    const temp = join(dataDir, `${LEASE_JOURNAL_FILE}.tmp`);
    // half a rewrite: the temp file's lines are not the journal's
    await writeFile(temp, '{"modelcache_leases":1}\n{"put":[{"id":"half","name":"a","grantedAtMs":1,"expiresAtMs":9999999999999}]}\n');
    const again = await started();
    expect(again.list()).to.deep.equal([kept]);
    expect(await stat(temp).then(() => "left", () => "gone")).to.equal("gone");
  });

  it("writes nothing through a link planted where its temp file goes, and reads no journal through a link", async () => {
    const outside = join(dataDir, "outside.txt");
    await writeFile(outside, "not the journal's");
    await symlink(outside, join(dataDir, `${LEASE_JOURNAL_FILE}.tmp`));
    const leases = await started();
    await leases.grant("a", 60, "svc");
    await journal.rewrite();
    expect(await readFile(outside, "utf8")).to.equal("not the journal's");
    expect((await lstat(join(dataDir, LEASE_JOURNAL_FILE))).isFile()).to.equal(true);
    await leases.close();
    // a journal that is a link is not followed: refused, naming the file
    await rm(join(dataDir, LEASE_JOURNAL_FILE));
    await symlink(outside, join(dataDir, LEASE_JOURNAL_FILE));
    const refused = await started().then(() => undefined, (err: unknown) => err);
    expect(refused).to.be.instanceOf(ModelCacheError);
    expect((refused as Error).message).to.include(join(dataDir, LEASE_JOURNAL_FILE));
    expect(await readFile(outside, "utf8")).to.equal("not the journal's");
  });

  it("reads a header written with other spacing, and names the file when the journal cannot be read", async () => {
    const path = join(dataDir, LEASE_JOURNAL_FILE);
    await writeFile(path, '{ "modelcache_leases": 1 }\r\n{"put":[{"id":"x","name":"a","grantedAtMs":1,"expiresAtMs":9999999999999}]}\n');
    expect((await started()).list().map((l) => l.id)).to.deep.equal(["x"]);
    await journal.close();
    await rm(path);
    await mkdir(path);
    const refused = await started().then(() => undefined, (err: unknown) => err);
    expect(refused).to.be.instanceOf(ModelCacheError);
    expect((refused as Error).message).to.include(path);
  });

  it("keeps the lines appended while a rewrite runs, and drops the ended leases", async () => {
    const leases = await started();
    const ids: string[] = [];
    for (let i = 0; i < 50; i++) ids.push((await leases.grant("a", 60, `svc-${i}`)).id);
    for (const id of ids.slice(0, 40)) await leases.release(id);
    const before = journal.bytes;
    const rewriting = journal.rewrite();
    // after the rewrite took its snapshot, before its rename: only the lines appended meanwhile carry these
    await leases.release(ids[40]!);
    const late = leases.grant("b", 60, "svc-late");
    await rewriting;
    const lease = await late;
    expect(journal.bytes).to.be.below(before);
    const again = await started();
    expect(again.list().map((l) => l.id).sort()).to.deep.equal([...ids.slice(41), lease.id].sort());
  });

  it("rewrites the journal in the background once ended leases make up most of it, so it does not grow without end", async () => {
    const rewrites: unknown[] = [];
    const leases = await started({ rewriteSlackBytes: 4096, rewritten: (outcome) => rewrites.push(outcome) });
    let last: Lease | undefined;
    for (let i = 0; i < 20_000 && rewrites.length < 3; i++) {
      if (last) await leases.release(last.id);
      last = await leases.grant("a", 60, "svc");
    }
    expect(rewrites.length).to.equal(3);
    // the one under way, if any, then one of its own: the journal with the live lease alone
    await journal.rewrite();
    await journal.rewrite();
    expect(rewrites.filter((r) => "failed" in (r as object))).to.deep.equal([]);
    // one live lease: the header and its line
    expect(journal.bytes).to.be.below(400);
    expect((await started()).list()).to.deep.equal([last]);
  });

  it("keeps ended the leases whose ending line is the one that starts a rewrite", async () => {
    const rewrites: unknown[] = [];
    const leases = await started({ rewriteSlackBytes: 2000, rewritten: (outcome) => rewrites.push(outcome) });
    for (let n = 1; n <= 30; n++) {
      const granted: Lease[] = [];
      for (let i = 0; i < n; i++) granted.push(await leases.grant(`m${n}`, 60, "svc"));
      // endings of both kinds: one lease released, the rest ended with their model
      await leases.release(granted[0]!.id);
      await leases.endAll(`m${n}`);
      await journal.idle();
      expect(await stored(), `after round ${n}`).to.equal(0);
    }
    expect(rewrites.length, "rewrites the endings started").to.be.above(3);
    expect(leases.list()).to.deep.equal([]);
    expect(await stored()).to.equal(0);
  });

  it("never writes a lease a forced removal ended while it waited for its write", async () => {
    const leases = await started();
    const granting = leases.grant("a", 60, "svc");
    expect(await leases.endAll("a")).to.equal(1);
    const refused = await granting.then(() => undefined, (err: unknown) => err);
    expect(refused).to.be.instanceOf(ModelCacheError).and.include({ kind: "aborted" });
    expect(await readFile(join(dataDir, LEASE_JOURNAL_FILE), "utf8")).to.not.include('"put"');
  });

  it("moves the leases an earlier version kept in LevelDB into the journal, once, also when a crash repeats the move", async () => {
    const earlier = registry.sublevel<Lease>("leases");
    const lease: Lease = { id: "earlier-1", name: "a", grantedAtMs: nowMs, expiresAtMs: nowMs + 60_000, holder: "svc" };
    await earlier.put(lease.id, lease);
    const first = new Leases(opening(), 3600, clock);
    const earlierRecords = registry.sublevel<Lease>("leases");
    // a crash after the journal was written and before the records were deleted: the same record is there again
    const originalBatch = earlierRecords.batch.bind(earlierRecords);
    (earlierRecords as unknown as { batch: unknown }).batch = async () => {
      throw new Error("killed before the records were deleted");
    };
    const failed = await first.load(async () => true, earlierRecords).then(() => "loaded", (err: unknown) => (err as Error).message);
    expect(failed).to.equal("killed before the records were deleted");
    (earlierRecords as unknown as { batch: unknown }).batch = originalBatch;
    await journal.close();
    const again = new Leases(opening(), 3600, clock);
    expect(await again.load(async () => true, registry.sublevel<Lease>("leases"))).to.deep.include({ loaded: 1, moved: 1 });
    expect(again.list()).to.deep.equal([lease]);
    expect(await registry.sublevel<Lease>("leases").keys().all()).to.deep.equal([]);
    expect((await new LeaseJournal(dataDir).read()).leases).to.deep.equal([lease]);
  });

  it("cuts a write the filesystem took only a part of back to the last whole line, so the journal stays readable to its end", async function () {
    // tmpfs takes a write page by page, so a full one keeps the part that fit (ext4 refuses the write whole)
    if (process.getuid?.() !== 0) this.skip();
    const mnt = join(dataDir, "tmpfs");
    await mkdir(mnt);
    const page = Number((await run("getconf", ["PAGESIZE"])).stdout.trim());
    const mounted = await run("mount", ["-t", "tmpfs", "-o", `size=${64 * page}`, "tmpfs", mnt]).then(
      () => true,
      () => false,
    );
    if (!mounted) this.skip();
    const full = new LeaseJournal(mnt, { now: clock });
    try {
      await full.start([], () => []);
      const lease = (i: number): Lease => ({ id: `lease-${i}`, name: "a", grantedAtMs: nowMs, expiresAtMs: nowMs + 60_000, holder: "svc" });
      full.put([lease(0)]);
      const ballast = await open(join(mnt, "ballast"), "a");
      for (const step of [64 * 1024, 4096, 1]) {
        while (await ballast.write(Buffer.alloc(step)).then(({ bytesWritten }) => bytesWritten === step, () => false));
      }
      await ballast.close();
      // a batch longer than two pages (a lease takes about 100 bytes): the first page's worth lands, the rest does not
      const refused = (() => {
        try {
          full.put(Array.from({ length: Math.ceil((2.5 * page) / 100) }, (_, i) => lease(i + 1)));
        } catch (err) {
          return err;
        }
      })();
      expect(refused).to.be.instanceOf(ModelCacheError).and.include({ kind: "resource_exhausted" });
      expect((await stat(full.path)).size).to.equal(full.bytes);
      await rm(join(mnt, "ballast"));
      full.put([lease(99)]);
      expect(await new LeaseJournal(mnt).read()).to.deep.equal({ leases: [lease(0), lease(99)], skipped: 0 });
    } finally {
      await full.close();
      // lazily when busy, as the small disk helper does, so the temp dir can go
      await run("umount", [mnt]).catch(() => run("umount", ["-l", mnt]));
    }
  });

  it("refuses a journal a later version wrote, naming the file and the way out, and leaves it as it is", async () => {
    const path = join(dataDir, LEASE_JOURNAL_FILE);
    const later = '{"modelcache_leases":2}\n{"lease":"in a later form"}\n';
    await writeFile(path, later);
    const refused = await started().then(() => undefined, (err: unknown) => err);
    expect(refused).to.be.instanceOf(ModelCacheError).and.include({ kind: "failed_precondition" });
    expect((refused as Error).message).to.include(path).and.include("format 2").and.include("run the version that wrote it");
    expect(await readFile(path, "utf8")).to.equal(later);
  });
});

describe("leases across a SIGKILL", () => {
  it("a restart lists every lease whose ResolveModel returned and whose ReleaseLease did not, with the journal rewritten in the background between kills", async function () {
    this.timeout(120_000);
    const work = await mkdtemp(join(tmpdir(), "modelcache-lease-kill-"));
    const dataDir = join(work, "data");
    const logFile = join(work, "server.log");
    const start = () => spawnServer({ dataDir, logFile, args: ["--log-level", "debug"] });
    const REWROTE = "rewrote the lease journal without its ended leases";
    let server = await start();
    try {
      await call(server.client, "registerModel", { model: modelSpec() });
      await pullOk(server.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
      /** granted and answered; released ones leave once their release is answered */
      const held = new Set<string>();
      /** releases sent and not answered: either way */
      const releasing = new Set<string>();
      /** released, and told so: never listed again */
      const released = new Set<string>();
      /** leases granted by calls a kill cut short, found after the restart */
      const unanswered = new Set<string>();
      for (let round = 0; round < 3; round++) {
        const heldBefore = held.size;
        let grantsInFlight = 0;
        let killed = false;
        const worker = async (n: number) => {
          for (let i = 0; !killed; i++) {
            grantsInFlight += 1;
            const lease = await call(server.client, "resolveModel", { name: "minilm", pullPolicy: PullPolicy.PULL_POLICY_IF_MISSING, leaseSeconds: 3600, credentialAlias: "" }).then(
              (answer) => answer.leaseId,
              () => undefined,
            );
            grantsInFlight -= 1;
            if (lease === undefined) return;
            held.add(lease);
            if ((i + n) % 4 === 0) continue;
            releasing.add(lease);
            const answered = await call(server.client, "releaseLease", { leaseId: lease }).then(
              () => true,
              () => false,
            );
            if (!answered) return;
            releasing.delete(lease);
            held.delete(lease);
            released.add(lease);
          }
        };
        const workers = Array.from({ length: 8 }, (_, n) => worker(n));
        // the first round goes on until the journal was rewritten at least once
        if (round === 0) await server.seen((entry) => entry.msg === REWROTE);
        const delayMs = 200 + Math.floor(Math.random() * 1500);
        await sleep(delayMs);
        // every round kills a server that kept a lease of its own
        while (held.size === heldBefore) await sleep(20);
        const inFlight = grantsInFlight;
        killed = true;
        await server.kill();
        await Promise.all(workers);
        server = await start();
        const listed = new Set((await call(server.client, "listLeases", { name: "" })).leases.map((l) => l.leaseId));
        const when = `round ${round}, killed ${delayMs} ms in`;
        for (const id of held) if (!releasing.has(id)) expect(listed.has(id), `${when}: lease ${id} was granted and never released`).to.equal(true);
        expect([...listed].filter((id) => released.has(id)), `${when}: released leases listed again`).to.deep.equal([]);
        const unknown = [...listed].filter((id) => !held.has(id) && !unanswered.has(id));
        // only grants the kill cut short may have been written without their answer
        expect(unknown.length, `${when}: leases nobody was told of`).to.be.at.most(inFlight);
        for (const id of unknown) unanswered.add(id);
      }
      const rewrites = (await readFile(logFile, "utf8")).split("\n").filter((line) => line.includes(REWROTE)).length;
      expect(rewrites, "no rewrite of the journal ran").to.be.above(0);
    } finally {
      await server.kill();
      await rm(work, { recursive: true, force: true });
    }
  });
});
