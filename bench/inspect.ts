// inspect: InspectCache (shallow) requests per second and latency with 1,
// 16 and 64 concurrent clients, beside grpc.health.v1.Health/Check (a no-op
// unary handler on the same server) as the baseline, the two measured in
// alternating turns.
import { credentials, loadPackageDefinition, type ServiceError } from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { protoPath as healthProtoPath } from "grpc-health-check";
import { FIXTURE_DIR } from "../test/support/test-server.js";
import { InspectCacheRequest } from "../generated/modelcache/v1/model_cache.js";
import { bodyFile, checkGrpcCall, grpcBody, h2loadBinary, h2loadTurn } from "./h2load.js";
import { type Result, median, pullAll, register, startBenchServer } from "./harness.js";

export interface Load {
  /** the median of the turns' requests per second (a burst of other work on the machine moves one turn, not the figure) */
  rps: number;
  /** each turn's requests per second */
  turnRps: number[];
  p50: number;
  p99: number;
  /** the server's CPU per call in microseconds, all threads and main thread (read from /proc around each turn) */
  cpuUs?: { process: number; main: number };
  /** the load generator's own CPU per call in microseconds (this process) */
  clientCpuUs?: number;
}

type CpuReader = () => Promise<{ process: number; main: number }>;

export type Call = () => Promise<unknown>;

/** Keeps every call busy for `durationMs`, adding each call's latency to `latencies`. */
export async function run(calls: Call[], durationMs: number, latencies: number[]): Promise<void> {
  const until = performance.now() + durationMs;
  await Promise.all(
    calls.map(async (call) => {
      while (performance.now() < until) {
        const started = performance.now();
        await call();
        latencies.push(performance.now() - started);
      }
    }),
  );
}

function summary(latencies: number[], turnRps: number[], cpu?: { process: number; main: number; client: number }): Load {
  const calls = latencies.length;
  latencies.sort((a, b) => a - b);
  const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0;
  const perCall = cpu && calls > 0 ? { process: (cpu.process / calls) * 1e6, main: (cpu.main / calls) * 1e6 } : undefined;
  return { rps: median(turnRps), turnRps, p50: at(0.5), p99: at(0.99), cpuUs: perCall, clientCpuUs: cpu && calls > 0 ? (cpu.client / calls) * 1e6 : undefined };
}

/**
 * One turn of load: keeps the server busy for `durationMs`, adding each
 * call's latency (ms) to `latencies`; resolves with the CPU seconds the load
 * generator used meanwhile.
 */
export type LoadTurn = (durationMs: number, latencies: number[]) => Promise<number>;

/** Load from grpc-js clients in this process: what a Node service calling modelcache sees, the client's CPU included. */
export function inProcessLoad(calls: Call[]): LoadTurn {
  return async (durationMs, latencies) => {
    const before = process.cpuUsage();
    await run(calls, durationMs, latencies);
    const used = process.cpuUsage(before);
    return (used.user + used.system) / 1e6;
  };
}

/**
 * Load from h2load when it is installed (h2load.ts): `clients` connections
 * sending `message` to `path`, proven to answer grpc-status 0 first. Else
 * (or with `inProcess`) the grpc-js calls `fallback` makes, with a warning
 * that the figures then include the load generator's CPU.
 */
export async function loadFor(options: { address: string; path: string; message: Uint8Array; clients: number; workDir: string; inProcess: boolean; fallback: () => Call[] }): Promise<LoadTurn> {
  const binary = options.inProcess ? undefined : h2loadBinary();
  if (!binary) {
    if (!options.inProcess) console.warn("h2load not found (Debian: nghttp2-client; or set H2LOAD): load from grpc-js clients in this process, whose CPU per call is about the server's, so the ratios lean toward 1");
    return inProcessLoad(options.fallback());
  }
  const body = grpcBody(options.message);
  await checkGrpcCall(options.address, options.path, body);
  const file = await bodyFile(options.workDir, options.path.replace(/[^A-Za-z]/g, "-"), body);
  let turn = 0;
  return async (durationMs, latencies) => {
    turn += 1;
    const result = await h2loadTurn(binary, { address: options.address, path: options.path, bodyFile: file, clients: options.clients, durationMs, logFile: `${file}.${turn}.log` });
    for (const latency of result.latencies) latencies.push(latency);
    return result.cpuSeconds;
  };
}

/** Runs one turn, adding the server's CPU seconds meanwhile to `cpu` when it can be read. */
async function timedTurn(load: LoadTurn, durationMs: number, latencies: number[], cpu: { process: number; main: number; client: number }, read?: CpuReader): Promise<void> {
  const before = await read?.();
  cpu.client += await load(durationMs, latencies);
  const after = await read?.();
  if (before && after) {
    cpu.process += after.process - before.process;
    cpu.main += after.main - before.main;
  }
}

/**
 * Both handlers in turns of a fraction of a second each, so that whatever
 * else the machine does in the meantime falls on both alike; each one's
 * requests per second is the median of its turns, so a burst of other work
 * that falls on a few turns of one of them does not move the ratio.
 */
export async function loadInTurns(first: LoadTurn, second: LoadTurn, durationMs: number, turns = 10, cpu?: CpuReader): Promise<[Load, Load]> {
  const a: number[] = [];
  const b: number[] = [];
  const cpuA = { process: 0, main: 0, client: 0 };
  const cpuB = { process: 0, main: 0, client: 0 };
  const rpsA: number[] = [];
  const rpsB: number[] = [];
  const turn = async (load: LoadTurn, latencies: number[], used: typeof cpuA, rps: number[]) => {
    const before = latencies.length;
    await timedTurn(load, durationMs / turns, latencies, used, cpu);
    rps.push((latencies.length - before) / (durationMs / turns / 1000));
  };
  for (let i = 0; i < turns; i++) {
    await turn(first, a, cpuA, rpsA);
    await turn(second, b, cpuB, rpsB);
  }
  return [summary(a, rpsA, cpu && cpuA), summary(b, rpsB, cpu && cpuB)];
}

/** "41 / 38": the server's CPU per call, all threads / main thread, in microseconds. */
export function cpuCell(load: Load): string {
  return load.cpuUs ? `${load.cpuUs.process.toFixed(0)} / ${load.cpuUs.main.toFixed(0)}` : "";
}

/**
 * Waits out the second after a pull in which the server lists an install
 * afresh on every call (its directories too recently changed to trust
 * their times, src/cache/footprint.ts): the benchmarks measure an install
 * in use, pulled earlier.
 */
export function settled(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 1100));
}

/**
 * Load on each path before the turns are timed: the server's young
 * generation grows under load over a second or two (young-generation.ts),
 * and its code is optimized as it runs; a shorter warm-up measures that ramp.
 */
export const WARM_UP_MS = 2000;

/** Health/Check with service "": an empty message. */
export const HEALTH_CHECK = { path: "/grpc.health.v1.Health/Check", message: new Uint8Array(0) };

/** The baseline's grpc-js calls: Health/Check from `clients` clients of their own; `opened` collects them to close. */
export function healthCalls(address: string, clients: number, opened: { close(): void }[]): Call[] {
  const Health = (loadPackageDefinition(loadSync(healthProtoPath)) as any).grpc.health.v1.Health;
  return Array.from({ length: clients }, () => {
    const c = new Health(address, credentials.createInsecure(), { "grpc.use_local_subchannel_pool": 1 });
    opened.push(c);
    return () => new Promise((resolve, reject) => c.check({ service: "" }, (err: ServiceError | null) => (err ? reject(err) : resolve(undefined))));
  });
}

export async function benchInspect(options: { workDir: string; seconds: number; levels: number[]; inProcess: boolean }): Promise<Result> {
  const server = await startBenchServer(options.workDir);
  const healthClients: { close(): void }[] = [];
  try {
    const client = server.client();
    await register(client, "bench");
    await pullAll(client, "bench", FIXTURE_DIR);
    await settled();
    const rows: Record<string, string | number>[] = [];
    const figures: Record<number, { inspect: Load; noop: Load }> = {};
    for (const level of options.levels) {
      const common = { address: server.address, clients: level, workDir: options.workDir, inProcess: options.inProcess };
      const inspectCalls = await loadFor({
        ...common,
        path: "/modelcache.v1.ModelCacheService/InspectCache",
        message: InspectCacheRequest.encode({ name: "bench", deep: false }).finish(),
        fallback: () =>
          Array.from({ length: level }, () => {
            const c = server.client();
            return () => new Promise((resolve, reject) => c.inspectCache({ name: "bench", deep: false }, (err) => (err ? reject(err) : resolve(undefined))));
          }),
      });
      const noopCalls = await loadFor({ ...common, ...HEALTH_CHECK, fallback: () => healthCalls(server.address, level, healthClients) });
      // warm both paths before measuring
      await inspectCalls(WARM_UP_MS, []);
      await noopCalls(WARM_UP_MS, []);
      const [noop, inspect] = await loadInTurns(noopCalls, inspectCalls, options.seconds * 1000, 10, () => server.cpuSeconds());
      figures[level] = { inspect, noop };
      rows.push(
        { clients: level, handler: "InspectCache", rps: inspect.rps.toFixed(0), "p50 ms": inspect.p50.toFixed(2), "p99 ms": inspect.p99.toFixed(2), "server CPU µs/call (all / main)": cpuCell(inspect), "load generator CPU µs/call": inspect.clientCpuUs?.toFixed(0) ?? "" },
        { clients: level, handler: "no-op (Health/Check)", rps: noop.rps.toFixed(0), "p50 ms": noop.p50.toFixed(2), "p99 ms": noop.p99.toFixed(2), "server CPU µs/call (all / main)": cpuCell(noop), "load generator CPU µs/call": noop.clientCpuUs?.toFixed(0) ?? "" },
      );
    }
    const at16 = figures[16] ?? figures[options.levels[Math.floor(options.levels.length / 2)]!]!;
    return {
      name: "inspect",
      subject_seconds: 1 / at16.inspect.rps,
      baseline_seconds: 1 / at16.noop.rps,
      ratio: at16.inspect.rps / at16.noop.rps,
      peak_rss_bytes: await server.peakRssBytes(),
      levels: figures,
      table: rows,
    };
  } finally {
    for (const c of healthClients) c.close();
    await server.stop();
  }
}
