// What every benchmark needs: a modelcache server in a child process (so its
// memory can be read apart from the load generator's), clients, generated
// fixtures, and the shell baseline.
import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdir, mkdtemp, open, readFile, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import { credentials } from "@grpc/grpc-js";
import { ModelCacheServiceClient, type PullResponse } from "../generated/modelcache/v1/model_cache.js";
import { call } from "../src/cli/client.js";
import { modelSpec } from "../test/support/test-server.js";

const run = promisify(execFile);
export const MiB = 1024 * 1024;
const ROOT = join(import.meta.dirname, "..");
/** Where benchmark output goes: results/<name>.json and each server's log under logs/ (git ignores `.bench/`). */
export const OUTPUT_DIR = join(ROOT, ".bench");

export interface Result {
  name: string;
  subject_seconds: number;
  baseline_seconds: number;
  /** subject / baseline, lower is better (for inspect: subject RPS / baseline RPS) */
  ratio: number;
  peak_rss_bytes?: number;
  /** rows of the printed table */
  table: Record<string, string | number>[];
  [extra: string]: unknown;
}

export interface BenchServer {
  address: string;
  pid: number;
  client(): ModelCacheServiceClient;
  /** the high-water mark of the server's resident memory so far (VmHWM) */
  peakRssBytes(): Promise<number>;
  /** the server's resident memory now (VmRSS) */
  rssBytes(): Promise<number>;
  /** CPU seconds (user + system) the server has used so far: all its threads, and its main thread alone */
  cpuSeconds(): Promise<{ process: number; main: number }>;
  stop(): Promise<void>;
}

/**
 * Node options of every benchmark server: `npm run bench -- --cpu-prof` adds
 * `--cpu-prof --cpu-prof-dir .bench/profiles`, a CPU profile of each server
 * written when it stops (open it in Chrome's DevTools or speedscope).
 */
/** BENCH_SERVER_NODE_ARGS (space-separated) adds Node options of its own, e.g. a --require to watch memory. */
export const serverNodeArgs: string[] = (process.env.BENCH_SERVER_NODE_ARGS ?? "").split(" ").filter((arg) => arg !== "");
/** The modelcache binary the benchmark servers run: this checkout's, or another's (`--server-bin`, to compare two builds in one run). */
export const serverBin = { path: join(import.meta.dirname, "..", "bin", "modelcache.js") };
export const PROFILE_DIR = join(import.meta.dirname, "..", ".bench", "profiles");

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
    server.on("error", reject);
  });
}

/** Starts `modelcache serve` on a fresh data dir and waits until it serves. */
export async function startBenchServer(workDir: string, extraArgs: string[] = []): Promise<BenchServer> {
  const port = await freePort();
  const dataDir = await mkdtemp(join(workDir, "data-"));
  // the server's log goes to a file, not into the tables on the terminal
  const logDir = join(OUTPUT_DIR, "logs");
  await mkdir(logDir, { recursive: true });
  const log = await open(join(logDir, `server-${new Date().toISOString().replace(/[:.]/g, "-")}-${port}.log`), "a");
  const child = spawn(process.execPath, [...serverNodeArgs, serverBin.path, "serve", "--listen", `127.0.0.1:${port}`, "--data-dir", dataDir, "--log-level", "warn", ...extraArgs], {
    stdio: ["ignore", log.fd, log.fd],
  });
  // the child holds its own copy of the descriptor
  await log.close();
  const address = `127.0.0.1:${port}`;
  const clients: ModelCacheServiceClient[] = [];
  const probe = new ModelCacheServiceClient(address, credentials.createInsecure());
  await new Promise<void>((resolve, reject) => probe.waitForReady(Date.now() + 30_000, (err) => (err ? reject(err) : resolve())));
  clients.push(probe);
  const exited = new Promise((resolve) => child.once("exit", resolve));
  return {
    address,
    pid: child.pid!,
    client() {
      const client = new ModelCacheServiceClient(address, credentials.createInsecure(), { "grpc.use_local_subchannel_pool": 1 });
      clients.push(client);
      return client;
    },
    async peakRssBytes() {
      const status = await readFile(`/proc/${child.pid}/status`, "utf8");
      const kb = Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? 0);
      return kb * 1024;
    },
    async cpuSeconds() {
      // utime and stime, the 14th and 15th fields of /proc/PID/stat, in clock ticks (100 a second on Linux)
      const ticks = async (path: string) => {
        const fields = (await readFile(path, "utf8")).split(") ")[1]!.split(" ");
        return (Number(fields[11]) + Number(fields[12])) / 100;
      };
      return { process: await ticks(`/proc/${child.pid}/stat`), main: await ticks(`/proc/${child.pid}/task/${child.pid}/stat`) };
    },
    async rssBytes() {
      const status = await readFile(`/proc/${child.pid}/status`, "utf8");
      return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024;
    },
    async stop() {
      for (const client of clients) client.close();
      child.kill("SIGTERM");
      await exited;
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

export async function register(client: ModelCacheServiceClient, name: string, source = "bench/model"): Promise<void> {
  await call(client, "registerModel", { model: modelSpec({ name, source }) });
}

/** Pulls to the end; `onEvent` may pause the stream to play a slow reader. Resolves with the number of events read. */
export function pullAll(client: ModelCacheServiceClient, name: string, fixtureDir: string, onEvent?: (event: PullResponse, pause: (ms: number) => void) => void, force = false): Promise<number> {
  const stream = client.pull({ name, fixtureDir, credentialAlias: "", force, detach: false });
  let count = 0;
  return new Promise((resolve, reject) => {
    stream.on("data", (event: PullResponse) => {
      count += 1;
      onEvent?.(event, (ms) => {
        stream.pause();
        setTimeout(() => stream.resume(), ms);
      });
    });
    stream.on("error", reject);
    stream.on("end", () => resolve(count));
  });
}

/** Writes a model directory: `shards` files of `shardBytes` each plus a few small JSON files. */
export async function makeFixture(dir: string, shards: number, shardBytes: number): Promise<void> {
  await mkdir(join(dir, "1_Pooling"), { recursive: true });
  const block = randomBytes(MiB);
  for (let i = 0; i < shards; i++) {
    const out = createWriteStream(join(dir, `model-${String(i + 1).padStart(5, "0")}-of-${String(shards).padStart(5, "0")}.safetensors`));
    for (let written = 0; written < shardBytes; written += MiB) {
      // vary each block so no two MiB are alike
      block.writeUInt32LE(i * 1_000_003 + written / MiB, 0);
      if (!out.write(Buffer.from(block.subarray(0, Math.min(MiB, shardBytes - written))))) await new Promise<void>((r) => out.once("drain", () => r()));
    }
    await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
  }
  const small: Record<string, unknown> = {
    "config.json": { model_type: "bert", hidden_size: 384 },
    "tokenizer.json": { model: { type: "WordPiece", vocab: Object.fromEntries(Array.from({ length: 3000 }, (_, i) => [`tok${i}`, i])) } },
    "tokenizer_config.json": { do_lower_case: true },
    "1_Pooling/config.json": { pooling_mode_mean_tokens: true },
  };
  for (const [path, json] of Object.entries(small)) {
    await mkdir(dirname(join(dir, path)), { recursive: true });
    await writeFile(join(dir, path), JSON.stringify(json));
  }
}

/**
 * The shell baseline, as durable as a pull: `cp -r` of the source, `openssl
 * dgst -sha256` of every copied file, then `sync` of the copied files (modelcache
 * fsyncs what it installs; without the sync the baseline would time page-cache
 * copies, and the disk's writeback would land in whatever runs next).
 */
export async function shellCopyAndHash(source: string, target: string): Promise<number> {
  await rm(target, { recursive: true, force: true });
  await quietDisk();
  const started = performance.now();
  await run("bash", ["-c", `cp -r "$1" "$2" && find "$2" -type f -exec openssl dgst -sha256 {} + > /dev/null && find "$2" -type f -exec sync {} +`, "baseline", source, target]);
  const seconds = (performance.now() - started) / 1000;
  await rm(target, { recursive: true, force: true });
  return seconds;
}

/** Lets the disk finish what the last step left (deleted files, writeback) before the next measurement starts. */
export async function quietDisk(): Promise<void> {
  await run("sync");
  await new Promise((resolve) => setTimeout(resolve, 500));
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/** Reads every file once so that subject and baseline both start from a warm page cache. */
export async function warm(dir: string): Promise<void> {
  await run("bash", ["-c", `find "$1" -type f -exec cat {} + > /dev/null`, "warm", dir]);
}

export async function workDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), "modelcache-bench-"));
}

export function seconds(since: number): number {
  return (performance.now() - since) / 1000;
}

/**
 * A pull against its shell baseline: one warm-up pull that does not count
 * (without it the first baseline alone runs on a machine no pull has touched
 * yet, and is its fastest by far), then the baseline and a first pull of
 * `name` in turn, `repeat` times, each on a quiet disk (`sync` and half a
 * second's pause). Before each pull the model is dropped, and with it its
 * content (no other model holds it), so each is a first pull into an empty
 * store. Medians count: loopback transfers and writeback on a shared machine
 * vary by a third from one run to the next.
 */
export async function alternatePulls(
  client: ModelCacheServiceClient,
  name: string,
  repeat: number,
  baseline: () => Promise<number>,
  fixtureDir = "",
  server?: Pick<BenchServer, "cpuSeconds">,
): Promise<{ subject: number; base: number; pulls: number[]; baselines: number[]; cpu?: { process: number; main: number } }> {
  const baselines: number[] = [];
  const pulls: number[] = [];
  // the server's CPU per pull: unlike the wall time, it hardly depends on what else runs on the machine
  const cpu = { process: 0, main: 0 };
  await pullAll(client, name, fixtureDir);
  await call(client, "dropCache", { name, force: false });
  for (let i = 0; i < repeat; i++) {
    await quietDisk();
    baselines.push(await baseline());
    await call(client, "dropCache", { name, force: false });
    await quietDisk();
    const before = await server?.cpuSeconds();
    const started = performance.now();
    await pullAll(client, name, fixtureDir);
    pulls.push(seconds(started));
    const after = await server?.cpuSeconds();
    if (before && after) {
      cpu.process += (after.process - before.process) / repeat;
      cpu.main += (after.main - before.main) / repeat;
    }
  }
  return { subject: median(pulls), base: median(baselines), pulls, baselines, cpu: server ? cpu : undefined };
}

/** The Result of alternatePulls: medians, every run, and the table the pull benchmarks print. */
export function remotePullResult(options: {
  name: string;
  measured: Awaited<ReturnType<typeof alternatePulls>>;
  repeat: number;
  bytes: number;
  shape: string;
  peakRssBytes: number;
  /** the server's RSS before its first pull */
  restRssBytes?: number;
  subject: string;
  baseline: string;
}): Result {
  const { subject, base, pulls, baselines, cpu } = options.measured;
  const rate = (s: number) => (options.bytes / 1e6 / s).toFixed(0);
  return {
    name: options.name,
    subject_seconds: subject,
    baseline_seconds: base,
    ratio: subject / base,
    peak_rss_bytes: options.peakRssBytes,
    rest_rss_bytes: options.restRssBytes,
    server_cpu_seconds_per_pull: cpu,
    bytes: options.bytes,
    shape: options.shape,
    subject_runs: pulls,
    baseline_runs: baselines,
    table: [
      { what: options.subject, "median s": subject.toFixed(3), "MB/s": rate(subject) },
      { what: options.baseline, "median s": base.toFixed(3), "MB/s": rate(base) },
      { what: `ratio of the medians of ${options.repeat} runs (lower is better)`, "median s": (subject / base).toFixed(2), "MB/s": "" },
      { what: "server peak RSS during the pulls (VmHWM)", "median s": `${(options.peakRssBytes / 1e6).toFixed(0)} MB`, "MB/s": "" },
      ...(options.restRssBytes ? [{ what: "server RSS at rest, before the first pull", "median s": `${(options.restRssBytes / 1e6).toFixed(0)} MB`, "MB/s": "" }] : []),
      ...(cpu ? [{ what: "server CPU per pull, all threads / main thread (s)", "median s": `${cpu.process.toFixed(2)} / ${cpu.main.toFixed(2)}`, "MB/s": "" }] : []),
    ],
  };
}
