// resolve: ResolveModel (IF_MISSING, on an installed model) requests per
// second with 16 concurrent clients, without a lease and with one, beside
// grpc.health.v1.Health/Check (a no-op unary handler on the same server),
// measured in alternating turns; then the background verification's effect
// on a concurrent pull: the same pull's time on a server re-hashing its store
// at the default rate, beside a server that does not verify.
import { join } from "node:path";
import { call } from "../src/cli/client.js";
import { PullPolicy, ResolveModelRequest } from "../generated/modelcache/v1/model_cache.js";
import { FIXTURE_DIR } from "../test/support/test-server.js";
import { type Result, MiB, makeFixture, median, pullAll, register, seconds, startBenchServer, warm } from "./harness.js";
import { HEALTH_CHECK, type Load, cpuCell, healthCalls, loadFor, loadInTurns, settled, WARM_UP_MS } from "./inspect.js";

export async function benchResolve(options: { workDir: string; seconds: number; clients: number; verifyMiB: number; repeat: number; inProcess: boolean }): Promise<Result> {
  const throughput = await resolveThroughput(options);
  const verification = await pullUnderVerification(options);
  const { plain, leased, noop, leasedNoop } = throughput;
  const row = (what: string, load: Load, ratio: string) => ({ what: `${what} (${options.clients} clients)`, rps: load.rps.toFixed(0), "p50 ms": load.p50.toFixed(2), "server CPU µs/call (all / main)": cpuCell(load), ratio });
  // each ratio against the Health/Check turns it alternated with
  const rows: Record<string, string>[] = [
    row("ResolveModel IF_MISSING, no lease", plain, (plain.rps / noop.rps).toFixed(2)),
    row("no-op (Health/Check), alternating with it", noop, "1.00"),
    row("ResolveModel IF_MISSING, 60 s lease", leased, (leased.rps / leasedNoop.rps).toFixed(2)),
    row("no-op (Health/Check), alternating with it", leasedNoop, "1.00"),
    { what: `pull of ${options.verifyMiB} MiB, store being verified at 100MiB/s (median s)`, rps: "", "p50 ms": "", ratio: verification.with.toFixed(3) },
    { what: `pull of ${options.verifyMiB} MiB, no verification (median s)`, rps: "", "p50 ms": "", ratio: verification.without.toFixed(3) },
    { what: "pull time with / without verification (lower is better)", rps: "", "p50 ms": "", ratio: (verification.with / verification.without).toFixed(2) },
  ];
  return {
    name: "resolve",
    subject_seconds: 1 / leased.rps,
    baseline_seconds: 1 / leasedNoop.rps,
    // leased ResolveModel RPS / no-op RPS (target >= 0.75; without a lease >= 0.85)
    ratio: leased.rps / leasedNoop.rps,
    plain_ratio: plain.rps / noop.rps,
    throughput,
    pull_with_verification_seconds: verification.with,
    pull_without_verification_seconds: verification.without,
    verification_ratio: verification.with / verification.without,
    table: rows,
  };
}

async function resolveThroughput(options: { workDir: string; seconds: number; clients: number; inProcess: boolean }): Promise<{ plain: Load; leased: Load; noop: Load; leasedNoop: Load }> {
  const server = await startBenchServer(options.workDir);
  const healthClients: { close(): void }[] = [];
  try {
    const client = server.client();
    await register(client, "bench");
    await pullAll(client, "bench", FIXTURE_DIR);
    await settled();
    const common = { address: server.address, clients: options.clients, workDir: options.workDir, inProcess: options.inProcess };
    const resolveCalls = (leaseSeconds: number) => {
      const request = { name: "bench", pullPolicy: PullPolicy.PULL_POLICY_IF_MISSING, leaseSeconds, credentialAlias: "" };
      return loadFor({
        ...common,
        path: "/modelcache.v1.ModelCacheService/ResolveModel",
        message: ResolveModelRequest.encode(request).finish(),
        fallback: () =>
          Array.from({ length: options.clients }, () => {
            const c = server.client();
            return () => new Promise((resolve, reject) => c.resolveModel(request, (err) => (err ? reject(err) : resolve(undefined))));
          }),
      });
    };
    const noopCalls = await loadFor({ ...common, ...HEALTH_CHECK, fallback: () => healthCalls(server.address, options.clients, healthClients) });
    const plainCalls = await resolveCalls(0);
    const leasedCalls = await resolveCalls(60);
    await plainCalls(WARM_UP_MS, []);
    await noopCalls(WARM_UP_MS, []);
    const [noop, plain] = await loadInTurns(noopCalls, plainCalls, options.seconds * 1000, 10, () => server.cpuSeconds());
    // leased only after: the thousands of leases a second's load grants stay
    // (in memory and in LevelDB, whose compactions take a core) for a minute,
    // which a server answering without leases would not carry
    await leasedCalls(WARM_UP_MS, []);
    const [leasedNoop, leased] = await loadInTurns(noopCalls, leasedCalls, options.seconds * 1000, 10, () => server.cpuSeconds());
    return { plain, leased, noop, leasedNoop };
  } finally {
    for (const c of healthClients) c.close();
    await server.stop();
  }
}

/** Median pull time of a fresh model on a server whose store holds another model as large, verifying it or not. */
async function pullUnderVerification(options: { workDir: string; verifyMiB: number; repeat: number }): Promise<{ with: number; without: number }> {
  const stored = join(options.workDir, "verify-stored");
  const pulled = join(options.workDir, "verify-pulled");
  await makeFixture(stored, 4, Math.floor((options.verifyMiB * MiB) / 4));
  await makeFixture(pulled, 4, Math.floor((options.verifyMiB * MiB) / 4));
  await warm(stored);
  await warm(pulled);
  const timed = async (extraArgs: string[]): Promise<number[]> => {
    const server = await startBenchServer(options.workDir, extraArgs);
    try {
      const client = server.client();
      await register(client, "stored");
      await register(client, "bench");
      await pullAll(client, "stored", stored);
      const runs: number[] = [];
      for (let i = 0; i < options.repeat; i++) {
        await call(client, "dropCache", { name: "bench", force: false });
        const started = performance.now();
        await pullAll(client, "bench", pulled);
        runs.push(seconds(started));
      }
      return runs;
    } finally {
      await server.stop();
    }
  };
  const without = await timed([]);
  const withVerification = await timed(["--verify-interval", "1s"]);
  return { with: median(withVerification), without: median(without) };
}
