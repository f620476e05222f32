// pull and repull: a generated model (a few large shards plus small JSON
// files) pulled through the gRPC API, beside `cp -r` + `openssl dgst -sha256`
// of the same files, both from a warm page cache; the best of `repeat` runs.
import { join } from "node:path";
import { call } from "../src/cli/client.js";
import { MiB, type Result, makeFixture, pullAll, register, seconds, shellCopyAndHash, startBenchServer, warm } from "./harness.js";

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
    for (let i = 0; i < options.repeat; i++) {
      baseline.push(await shellCopyAndHash(source, join(options.workDir, "pull-copy")));
      await call(client, "dropCache", { name: "bench" });
      let started = performance.now();
      await pullAll(client, "bench", source);
      fresh.push(seconds(started));
      started = performance.now();
      await pullAll(client, "bench", source);
      again.push(seconds(started));
    }
    const base = Math.min(...baseline);
    const result = (name: string, runs: number[]): Result => {
      const best = Math.min(...runs);
      return {
        name,
        subject_seconds: best,
        baseline_seconds: base,
        ratio: best / base,
        bytes,
        subject_mb_per_s: bytes / 1e6 / best,
        baseline_mb_per_s: bytes / 1e6 / base,
        peak_rss_bytes: undefined,
        table: [
          { what: `modelcache ${name} (gRPC, sha256, fsync)`, seconds: best.toFixed(3), "MB/s": (bytes / 1e6 / best).toFixed(0) },
          { what: "cp -r + openssl dgst -sha256", seconds: base.toFixed(3), "MB/s": (bytes / 1e6 / base).toFixed(0) },
          { what: "ratio (lower is better)", seconds: (best / base).toFixed(2), "MB/s": "" },
        ],
      };
    };
    const peak = await server.peakRssBytes();
    return { pull: { ...result("pull", fresh), peak_rss_bytes: peak }, repull: { ...result("repull", again), peak_rss_bytes: peak } };
  } finally {
    await server.stop();
  }
}
