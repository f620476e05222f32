// pull and repull: a generated model (a few large shards, by default 2 x 256
// MiB, plus small JSON files) pulled through the gRPC API from a directory,
// beside the shell's durable equivalent (`cp -r` + `openssl dgst -sha256` +
// `sync` of the copied files), both from a warm page cache, each after `sync`
// and a pause; the first pull after the model and its content were dropped,
// the repull of the unchanged directory right after it. Runs alternate, the
// ratio of the medians of `repeat` runs counts.
import { join } from "node:path";
import { call } from "../src/cli/client.js";
import { MiB, type Result, makeFixture, median, pullAll, quietDisk, register, seconds, shellCopyAndHash, startBenchServer, warm } from "./harness.js";

export interface PullOptions {
  workDir: string;
  totalMiB: number;
  shards: number;
  repeat: number;
}

export async function benchPull(options: PullOptions): Promise<{ pull: Result; repull: Result }> {
  const source = join(options.workDir, "pull-source");
  const shardBytes = Math.floor((options.totalMiB * MiB) / options.shards);
  await makeFixture(source, options.shards, shardBytes);
  const bytes = options.shards * shardBytes;
  await warm(source);
  const server = await startBenchServer(options.workDir);
  try {
    const client = server.client();
    await register(client, "bench");
    const baseline: number[] = [];
    const fresh: number[] = [];
    const again: number[] = [];
    // the server's CPU per first pull, which hardly depends on what else runs on the machine
    const cpu = { process: 0, main: 0 };
    for (let i = 0; i < options.repeat; i++) {
      baseline.push(await shellCopyAndHash(source, join(options.workDir, "pull-copy")));
      await call(client, "dropCache", { name: "bench", force: false });
      await quietDisk();
      const before = await server.cpuSeconds();
      let started = performance.now();
      await pullAll(client, "bench", source);
      fresh.push(seconds(started));
      const after = await server.cpuSeconds();
      cpu.process += (after.process - before.process) / options.repeat;
      cpu.main += (after.main - before.main) / options.repeat;
      await quietDisk();
      started = performance.now();
      await pullAll(client, "bench", source);
      again.push(seconds(started));
    }
    const base = median(baseline);
    const result = (name: string, runs: number[]): Result => {
      const best = median(runs);
      return {
        name,
        subject_seconds: best,
        baseline_seconds: base,
        ratio: best / base,
        bytes,
        subject_runs: runs,
        server_cpu_seconds_per_pull: name === "pull" ? cpu : undefined,
        baseline_runs: baseline,
        subject_mb_per_s: bytes / 1e6 / best,
        baseline_mb_per_s: bytes / 1e6 / base,
        peak_rss_bytes: undefined,
        table: [
          { what: `modelcache ${name === "pull" ? "first pull" : "repull"} of ${options.shards} x ${Math.floor(options.totalMiB / options.shards)} MiB (gRPC, sha256, fsync)`, "median s": best.toFixed(3), "MB/s": (bytes / 1e6 / best).toFixed(0) },
          { what: "cp -r DIR + openssl dgst -sha256 FILES + sync FILES", "median s": base.toFixed(3), "MB/s": (bytes / 1e6 / base).toFixed(0) },
          { what: `ratio of the medians of ${options.repeat} runs (lower is better)`, "median s": (best / base).toFixed(2), "MB/s": "" },
          ...(name === "pull" ? [{ what: "server CPU per first pull, all threads / main thread (s)", "median s": `${cpu.process.toFixed(2)} / ${cpu.main.toFixed(2)}`, "MB/s": "" }] : []),
        ],
      };
    };
    const peak = await server.peakRssBytes();
    return { pull: { ...result("pull", fresh), peak_rss_bytes: peak }, repull: { ...result("repull", again), peak_rss_bytes: peak } };
  } finally {
    await server.stop();
  }
}
