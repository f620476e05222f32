// The crash torture: cycles of (a random operation on a running server,
// SIGKILL at a random moment, restart), checking after every restart that each
// model is in the state it had before the operation or the one the operation
// was heading for (never unhealthy, never a mix of two versions), that the
// registry agrees with the disk, that recovery left nothing behind, and that a
// plain Pull still works, and every installed file is a link to its stored content.
// The server runs under a quota with background verification on; after every
// restart a capacity round (no kill) pulls small models side by side, one of
// them leased, the torture's own two models pinned, and counts as violations:
// content in use over the quota, a leased or pinned install evicted, a pull
// that hangs or fails other than RESOURCE_EXHAUSTED, a model found unhealthy.
import { lstat, mkdir, mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { type ServiceError, status as grpcStatus } from "@grpc/grpc-js";
import { CacheStatus, type ModelCacheServiceClient, ModelStatus, PullPolicy } from "../../generated/modelcache/v1/model_cache.js";
import { call, modelSpec, pull } from "../support/test-server.js";
import { spawnServer } from "../support/child-server.js";
import { CAPACITY_MODELS, HUB_REPO, makeSources, type Sources, type Version } from "./sources.js";

type Install = "A" | "B" | "H" | "missing";
interface ModelState {
  registered: boolean;
  install: Install;
}
type World = Record<ModelName, ModelState>;
type ModelName = "local-model" | "hub-model";
const MODELS: readonly ModelName[] = ["local-model", "hub-model"];
/** --cache-max-bytes: both pinned models and about two of the capacity rounds' models fit */
const QUOTA = 26 * 1024 * 1024;

interface Operation {
  label: string;
  /** the state each model it touches is heading for */
  targets: Partial<World>;
  run(client: ModelCacheServiceClient): Promise<unknown>;
}

export interface TortureOptions {
  cycles: number;
  seed: number;
  /** the longest wait before the kill, until an operation's own duration is known */
  killWindowMs?: number;
  /** called with one line per cycle */
  report?: (line: string) => void;
}

export interface TortureResult {
  cycles: number;
  /** cycles whose operation was still running when the server was killed */
  killedMidway: number;
  operations: Record<string, number>;
  capacityRounds: number;
  /** what the capacity rounds found wrong (each names its round) */
  violations: string[];
}

/** mulberry32: a small seeded generator, so that a failing run can be replayed from its seed */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export async function runTorture(options: TortureOptions): Promise<TortureResult> {
  const random = seededRandom(options.seed);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
  const work = await mkdtemp(join(tmpdir(), "modelcache-torture-"));
  const dataDir = join(work, "data");
  const cacheRoot = join(dataDir, "ai_models_cache");
  const logFile = join(work, "server.log");
  await mkdir(join(work, "sources"), { recursive: true });
  const sources = await makeSources(join(work, "sources"), random);
  const start = () =>
    spawnServer({
      dataDir,
      logFile,
      args: ["--hub-url", sources.hub.url, "--fixture-root", sources.root, "--log-level", "info", "--max-concurrent-pulls", "3", "--cache-max-bytes", String(QUOTA), "--verify-interval", "1s"],
    });
  const result: TortureResult = { cycles: 0, killedMidway: 0, operations: {}, capacityRounds: 0, violations: [] };
  let server = await start();
  let failed = false;
  try {
    const world: World = { "local-model": { registered: false, install: "missing" }, "hub-model": { registered: false, install: "missing" } };
    for (const name of CAPACITY_MODELS) await call(server.client, "registerModel", { model: modelSpec({ name, source: `torture/${name}` }) });
    await repair(server.client, world, sources, pick);
    // how long each kind of operation takes when left alone: the kill lands
    // anywhere within it (and sometimes just after), so most kills hit midway
    const durations = new Map<string, number>();
    for (let cycle = 1; cycle <= options.cycles; cycle += 1) {
      const operation = chooseOperation(world, sources, pick);
      const kind = operation.label.split("(")[0]!;
      const delay = Math.floor(random() * 1.15 * (durations.get(kind) ?? options.killWindowMs ?? 900));
      let settled = false;
      const began = performance.now();
      const done = () => {
        settled = true;
        durations.set(kind, performance.now() - began);
      };
      const running = operation.run(server.client).then(done, done);
      await sleep(delay);
      const midway = !settled;
      await server.kill();
      await running;
      const context = `cycle ${cycle} (${operation.label}, killed after ${delay} ms${midway ? ", midway" : ""})`;
      server = await start();
      const found = await observe(server.client, cacheRoot, sources).catch((err: Error) => {
        throw new Error(`${context}: ${err.message}`);
      });
      for (const name of MODELS) {
        const allowed = [world[name], operation.targets[name] ?? world[name]];
        if (!allowed.some((s) => s.registered === found[name].registered && s.install === found[name].install)) {
          throw new Error(`${context}: ${name} is ${describe(found[name])}, expected ${allowed.map(describe).join(" or ")}`);
        }
        world[name] = found[name];
      }
      await repair(server.client, world, sources, pick).catch((err: Error) => {
        throw new Error(`${context}: ${err.message}`);
      });
      const round = await capacityRound(server.client, cacheRoot, sources, pick);
      for (const violation of round.violations) result.violations.push(`after ${context}: ${violation}`);
      result.capacityRounds += 1;
      result.cycles = cycle;
      if (midway) result.killedMidway += 1;
      result.operations[kind] = (result.operations[kind] ?? 0) + 1;
      options.report?.(`cycle ${cycle}/${options.cycles}: ${operation.label}, killed after ${delay} ms${midway ? " (midway)" : " (done)"}; after restart ${MODELS.map((n) => `${n} ${describe(found[n])}`).join(", ")}; capacity round: ${round.summary}`);
    }
    return result;
  } catch (err) {
    failed = true;
    throw new Error(`${(err as Error).message}\n  seed ${options.seed}; the server's log and data dir are kept in ${work}`, { cause: err });
  } finally {
    await server.kill();
    await sources.close();
    if (!failed) await rm(work, { recursive: true, force: true });
  }
}

function describe(state: ModelState): string {
  return state.registered ? `registered, ${state.install === "missing" ? "not installed" : `installed version ${state.install}`}` : "unregistered";
}

function chooseOperation(world: World, sources: Sources, pick: <T>(items: readonly T[]) => T): Operation {
  const version = pick(["A", "B"] as const);
  const localPull = (force: boolean) => (client: ModelCacheServiceClient) => pull(client, { name: "local-model", fixtureDir: sources.dirs[version], force });
  const hubPull = (force: boolean) => (client: ModelCacheServiceClient) => pull(client, { name: "hub-model", force });
  const installed = (install: Install): ModelState => ({ registered: true, install });
  const name = pick(MODELS);
  const operations: Operation[] = [
    { label: `pull(local-model ${version})`, targets: { "local-model": installed(version) }, run: localPull(false) },
    { label: `force-pull(local-model ${version})`, targets: { "local-model": installed(version) }, run: localPull(true) },
    { label: "hub-pull(hub-model)", targets: { "hub-model": installed("H") }, run: hubPull(false) },
    { label: "force-hub-pull(hub-model)", targets: { "hub-model": installed("H") }, run: hubPull(true) },
    {
      label: `two-pulls(local-model ${version}, hub-model)`,
      targets: { "local-model": installed(version), "hub-model": installed("H") },
      run: (client) => Promise.all([localPull(false)(client), hubPull(true)(client)]),
    },
    { label: `drop(${name})`, targets: { [name]: { registered: world[name].registered, install: "missing" } }, run: (client) => call(client, "dropCache", { name, force: false }) },
    { label: "prune", targets: {}, run: (client) => call(client, "pruneCache", { dryRun: false }) },
    {
      label: `pull-and-prune(local-model ${version})`,
      targets: { "local-model": installed(version) },
      run: (client) => Promise.all([localPull(false)(client), call(client, "pruneCache", { dryRun: false })]),
    },
    { label: `unregister(${name})`, targets: { [name]: { registered: false, install: "missing" } }, run: (client) => call(client, "unregisterModel", { name, dropCache: true }) },
  ];
  return pick(operations);
}

/** What the restarted server and the disk say about each model; throws on anything never allowed. */
async function observe(client: ModelCacheServiceClient, cacheRoot: string, sources: Sources): Promise<World> {
  const world = {} as World;
  for (const name of MODELS) {
    const model = await call(client, "getModel", { name }).then(
      (r) => r.model,
      (err: ServiceError) => {
        if (err.code === grpcStatus.NOT_FOUND) return undefined;
        throw err;
      },
    );
    const installDir = join(cacheRoot, name);
    if (!model) {
      const left = await readdir(installDir).catch(() => undefined);
      if (left) throw new Error(`${name} is unregistered but its install is still on disk (${left.length} entries)`);
      world[name] = { registered: false, install: "missing" };
      continue;
    }
    const inspected = await call(client, "inspectCache", { name, deep: true });
    if (inspected.status === CacheStatus.CACHE_STATUS_UNHEALTHY) throw new Error(`${name} is unhealthy after the restart: ${inspected.detail}`);
    const installed = inspected.status === CacheStatus.CACHE_STATUS_INSTALLED;
    const expectedStatus = installed ? ModelStatus.MODEL_STATUS_INSTALLED : ModelStatus.MODEL_STATUS_REGISTERED;
    if (model.status !== expectedStatus) throw new Error(`the registry says ${ModelStatus[model.status]} for ${name}, the disk says ${CacheStatus[inspected.status]}`);
    if (!installed) {
      world[name] = { registered: true, install: "missing" };
      continue;
    }
    const files = new Map((inspected.manifest?.files ?? []).map((f) => [f.path, f.sha256]));
    const version = (["A", "B", "H"] as const).find((v) => sameFiles(files, sources.versions[v]));
    if (!version) throw new Error(`${name}'s install is none of the versions pulled (a mix?): ${[...files.keys()].join(", ")}`);
    const onDisk = (await listFiles(installDir)).filter((p) => p !== "manifest.json").sort();
    if (onDisk.join("\n") !== [...files.keys()].sort().join("\n")) throw new Error(`${name}'s install holds files its manifest does not list: ${onDisk.join(", ")}`);
    // every installed file is the stored content its manifest names (deep inspect checked the bytes), and that content is in the store
    for (const [path, sha] of files) {
      const [file, blob] = [await lstat(join(installDir, path)), await lstat(join(cacheRoot, ".blobs", "sha256", sha)).catch(() => undefined)];
      if (!blob) throw new Error(`${name}'s file ${path} names content ${sha} the store does not hold`);
      if (blob.ino !== file.ino) throw new Error(`${name}'s file ${path} is not a link to the stored content ${sha}`);
    }
    world[name] = { registered: true, install: version };
  }
  for (const leftover of [".staging", ".purge"]) {
    const entries = await readdir(join(cacheRoot, leftover)).catch(() => []);
    if (entries.length > 0) throw new Error(`recovery left ${leftover}/${entries.join(", ")} behind`);
  }
  for (const entry of await readdir(cacheRoot).catch(() => [] as string[])) {
    if (!entry.startsWith(".") && !MODELS.includes(entry as ModelName) && !(CAPACITY_MODELS as readonly string[]).includes(entry)) throw new Error(`the cache root holds '${entry}', which no model owns`);
  }
  return world;
}

function sameFiles(files: ReadonlyMap<string, string>, version: Version): boolean {
  return files.size === version.size && [...version].every(([path, sha]) => files.get(path) === sha);
}

async function listFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((e) => !e.isDirectory()).map((e) => relative(dir, join(e.parentPath, e.name)));
}

/** Registers what is unregistered and pulls every model; each pull must complete. */
async function repair(client: ModelCacheServiceClient, world: World, sources: Sources, pick: <T>(items: readonly T[]) => T): Promise<void> {
  for (const name of MODELS) {
    if (!world[name].registered) {
      // pinned: the capacity rounds' evictions never touch them
      await call(client, "registerModel", { model: modelSpec({ name, source: name === "hub-model" ? HUB_REPO : "torture/local-model", pinned: true }) });
    }
    const version = name === "hub-model" ? "H" : pick(["A", "B"] as const);
    const outcome = await pull(client, { name, fixtureDir: version === "H" ? "" : sources.dirs[version] });
    if (outcome.error || !outcome.events.at(-1)?.completed) {
      throw new Error(`a plain Pull of ${name} after the restart failed: ${outcome.error?.message ?? "the stream ended without completed"}`);
    }
    world[name] = { registered: true, install: version };
  }
}

/**
 * Three of the capacity models pulled at once (some forced) under the quota,
 * one installed model leased meanwhile, background verification running;
 * returns what it found wrong.
 */
async function capacityRound(client: ModelCacheServiceClient, cacheRoot: string, sources: Sources, pick: <T>(items: readonly T[]) => T): Promise<{ violations: string[]; summary: string }> {
  const violations: string[] = [];
  const statusOf = async (name: string) => (await call(client, "getModel", { name })).model!.status;
  const installed: string[] = [];
  for (const name of CAPACITY_MODELS) if ((await statusOf(name)) === ModelStatus.MODEL_STATUS_INSTALLED) installed.push(name);
  let lease: { name: string; id: string } | undefined;
  if (installed.length > 0 && pick([true, false])) {
    const name = pick(installed);
    const resolved = await call(client, "resolveModel", { name, pullPolicy: PullPolicy.PULL_POLICY_NEVER, leaseSeconds: 600, credentialAlias: "" });
    lease = { name, id: resolved.leaseId };
  }
  const chosen = [...CAPACITY_MODELS].sort(() => pick([-1, 1])).slice(0, 3);
  const outcomes = await Promise.all(
    chosen.map((name) => pull(client, { name, fixtureDir: sources.capacity[name]!, force: pick([true, false]) }, { deadline: new Date(Date.now() + 120_000) }).then((outcome) => ({ name, outcome }))),
  );
  const told: string[] = [];
  for (const { name, outcome } of outcomes) {
    const code = outcome.error?.code;
    const evicted = outcome.events.find((e) => e.started)?.started?.evictedModels ?? [];
    told.push(`${name} ${code === undefined ? "ok" : grpcStatus[code]}${evicted.length > 0 ? ` (evicted ${evicted.join(", ")})` : ""}`);
    if (code === grpcStatus.DEADLINE_EXCEEDED) violations.push(`the pull of ${name} hung (no end within 120 s)`);
    else if (code !== undefined && code !== grpcStatus.RESOURCE_EXHAUSTED) violations.push(`the pull of ${name} failed: ${outcome.error!.message}`);
  }
  const inUse = await contentInUse(cacheRoot);
  if (inUse > QUOTA) violations.push(`the installs use ${inUse} bytes of stored content, over --cache-max-bytes ${QUOTA}`);
  if (lease) {
    if ((await statusOf(lease.name)) !== ModelStatus.MODEL_STATUS_INSTALLED) violations.push(`${lease.name} was leased, and is no longer installed`);
    await call(client, "releaseLease", { leaseId: lease.id });
  }
  for (const name of MODELS) if ((await statusOf(name)) !== ModelStatus.MODEL_STATUS_INSTALLED) violations.push(`${name} is pinned, and is no longer installed`);
  for (const name of [...MODELS, ...CAPACITY_MODELS]) if ((await statusOf(name)) === ModelStatus.MODEL_STATUS_UNHEALTHY) violations.push(`${name} is unhealthy (nothing corrupted it)`);
  return { violations, summary: `${told.join(", ")}${lease ? `; ${lease.name} leased` : ""}` };
}

/** Bytes of stored content some install links, and the installs' manifests: what the quota bounds once no pull runs. */
async function contentInUse(cacheRoot: string): Promise<number> {
  let bytes = 0;
  const blobs = join(cacheRoot, ".blobs", "sha256");
  for (const name of await readdir(blobs).catch(() => [] as string[])) {
    const blob = await lstat(join(blobs, name)).catch(() => undefined);
    if (blob?.isFile() && blob.nlink > 1) bytes += blob.size;
  }
  for (const name of [...MODELS, ...CAPACITY_MODELS]) bytes += (await stat(join(cacheRoot, name, "manifest.json")).catch(() => undefined))?.size ?? 0;
  return bytes;
}
