import { spawn } from "node:child_process";
import { mkdir, mkdtemp, readdir, readlink, rm, stat, writeFile } from "node:fs/promises";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { CacheLayout } from "../src/cache/layout.js";
import { ModelLocks } from "../src/cache/model-lock.js";
import { captureLogs } from "./support/log-capture.js";

/** The pid of a process that has exited. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ["-e", "0"], { stdio: "ignore" });
  await new Promise((resolve) => child.on("exit", resolve));
  return child.pid!;
}

describe("model locks across processes", () => {
  let root: string;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), "modelcache-locks-"));
  });
  afterEach(() => rm(root, { recursive: true, force: true }));

  /** Leaves a fresh lock of `name` as a process that died holding it would. */
  async function leaveLock(name: string, owner: { host: string; pid: number; pids?: string } | undefined): Promise<void> {
    const lockPath = join(root, ".locks", `${name}.lock`);
    await mkdir(lockPath, { recursive: true });
    if (owner) await writeFile(join(root, ".locks", `${name}.owner`), JSON.stringify({ pids: await readlink("/proc/self/ns/pid").catch(() => ""), ...owner, ino: (await stat(lockPath)).ino }));
  }

  it("takes over at once a lock whose holder on this host is gone, without waiting for it to go stale", async () => {
    const logs = captureLogs();
    const pid = await deadPid();
    await leaveLock("minilm", { host: hostname(), pid });
    const locks = new ModelLocks(new CacheLayout(root), { log: logs.logger });
    const release = await locks.acquire("minilm", undefined);
    await release();
    expect(logs.lines.map((l) => l.msg)).to.deep.equal(["took over a model lock whose holder is gone"]);
    expect(logs.lines[0]).to.include({ model: "minilm", ownerPid: pid });
    expect(await readdir(join(root, ".locks")), "released: no lock and no owner record left").to.deep.equal([]);
  });

  it("says why it waits when the holder is alive, and gives up with UNAVAILABLE", async () => {
    const logs = captureLogs();
    const other = new ModelLocks(new CacheLayout(root));
    const held = await other.acquire("minilm", undefined);
    try {
      const locks = new ModelLocks(new CacheLayout(root), { log: logs.logger });
      const err = await locks.acquire("minilm", undefined, 300).then(() => undefined, (e: unknown) => e as Error & { kind?: string });
      expect(err?.kind).to.equal("unavailable");
      expect(logs.lines.map((l) => l.msg)).to.deep.equal([`waiting for model lock: it is held by live process ${process.pid} on this host`]);
    } finally {
      await held();
    }
  });

  it("tries a lock a live process of this host holds and gives up at once, never waiting for it to go stale", async () => {
    const logs = captureLogs();
    const other = new ModelLocks(new CacheLayout(root));
    const held = await other.acquire("minilm", undefined);
    try {
      const locks = new ModelLocks(new CacheLayout(root), { log: logs.logger });
      // a wait far past the test's timeout: only giving up at once passes
      expect(await locks.tryAcquire("minilm", 3_600_000)).to.equal(undefined);
      expect(logs.lines.map((l) => l.msg), "no waiting").to.deep.equal([]);
    } finally {
      await held();
    }
  });

  it("waits for staleness when the holder's pid belongs to another pid namespace (another container)", async () => {
    const logs = captureLogs();
    await leaveLock("minilm", { host: hostname(), pids: "pid:[1]", pid: await deadPid() });
    const locks = new ModelLocks(new CacheLayout(root), { log: logs.logger });
    const err = await locks.acquire("minilm", undefined, 300).then(() => undefined, (e: unknown) => e as Error & { kind?: string });
    expect(err?.kind).to.equal("unavailable");
    expect(logs.lines.map((l) => l.msg)).to.have.length(1);
    expect(logs.lines[0]!.msg).to.include("pid namespace pid:[1]").and.include("cannot be checked");
  });

  it("says why it waits for staleness when a lock has no owner record", async () => {
    const logs = captureLogs();
    await leaveLock("minilm", undefined);
    const locks = new ModelLocks(new CacheLayout(root), { log: logs.logger });
    const err = await locks.acquire("minilm", undefined, 300).then(() => undefined, (e: unknown) => e as Error & { kind?: string });
    expect(err?.kind).to.equal("unavailable");
    expect(logs.lines.map((l) => l.msg)).to.deep.equal(["waiting for model lock: its holder left no owner record; it is taken over once it has not been refreshed for 10 s"]);
  });

  it("keeps two models' locks apart: releasing one leaves the other held", async () => {
    const locks = new ModelLocks(new CacheLayout(root));
    const a = await locks.acquire("a", undefined);
    const b = await locks.acquire("b", undefined);
    await a();
    const other = new ModelLocks(new CacheLayout(root));
    const err = await other.acquire("b", undefined, 300).then(() => undefined, (e: unknown) => e as Error & { kind?: string });
    expect(err?.kind).to.equal("unavailable");
    await b();
    await (await other.acquire("b", undefined, 300))();
  });
});
