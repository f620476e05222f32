// inspect: InspectCache (shallow) requests per second and latency with 1,
// 16 and 64 concurrent clients, beside grpc.health.v1.Health/Check (a no-op
// unary handler on the same server) as the baseline, the two measured in
// alternating turns.
import { credentials, loadPackageDefinition, type ServiceError } from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { protoPath as healthProtoPath } from "grpc-health-check";
import { FIXTURE_DIR } from "../test/support/test-server.js";
import { type Result, pullAll, register, startBenchServer } from "./harness.js";

export interface Load {
  rps: number;
  p50: number;
  p99: number;
}

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

function summary(latencies: number[], durationMs: number): Load {
  latencies.sort((a, b) => a - b);
  const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0;
  return { rps: latencies.length / (durationMs / 1000), p50: at(0.5), p99: at(0.99) };
}

/**
 * Both handlers in turns of a fraction of a second each, so that whatever
 * else the machine does in the meantime falls on both alike.
 */
export async function loadInTurns(first: Call[], second: Call[], durationMs: number, turns = 10): Promise<[Load, Load]> {
  const a: number[] = [];
  const b: number[] = [];
  for (let i = 0; i < turns; i++) {
    await run(first, durationMs / turns, a);
    await run(second, durationMs / turns, b);
  }
  return [summary(a, durationMs), summary(b, durationMs)];
}

export async function benchInspect(options: { workDir: string; seconds: number; levels: number[] }): Promise<Result> {
  const server = await startBenchServer(options.workDir);
  const Health = (loadPackageDefinition(loadSync(healthProtoPath)) as any).grpc.health.v1.Health;
  const healthClients: { close(): void }[] = [];
  try {
    const client = server.client();
    await register(client, "bench");
    await pullAll(client, "bench", FIXTURE_DIR);
    const rows: Record<string, string | number>[] = [];
    const figures: Record<number, { inspect: Load; noop: Load }> = {};
    for (const level of options.levels) {
      const inspectCalls: Call[] = Array.from({ length: level }, () => {
        const c = server.client();
        return () => new Promise((resolve, reject) => c.inspectCache({ name: "bench", deep: false }, (err) => (err ? reject(err) : resolve(undefined))));
      });
      const noopCalls: Call[] = Array.from({ length: level }, () => {
        const c = new Health(server.address, credentials.createInsecure(), { "grpc.use_local_subchannel_pool": 1 });
        healthClients.push(c);
        return () => new Promise((resolve, reject) => c.check({ service: "" }, (err: ServiceError | null) => (err ? reject(err) : resolve(undefined))));
      });
      // warm both paths before measuring
      await run(inspectCalls, 300, []);
      await run(noopCalls, 300, []);
      const [noop, inspect] = await loadInTurns(noopCalls, inspectCalls, options.seconds * 1000);
      figures[level] = { inspect, noop };
      rows.push(
        { clients: level, handler: "InspectCache", rps: inspect.rps.toFixed(0), "p50 ms": inspect.p50.toFixed(2), "p99 ms": inspect.p99.toFixed(2) },
        { clients: level, handler: "no-op (Health/Check)", rps: noop.rps.toFixed(0), "p50 ms": noop.p50.toFixed(2), "p99 ms": noop.p99.toFixed(2) },
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
