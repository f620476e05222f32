// bigfile: one large file pulled; the server's peak RSS must not grow with
// the file. Baseline: cp + openssl dgst -sha256 + sync of the same file.
import { join } from "node:path";
import { MiB, type Result, makeFixture, pullAll, quietDisk, register, seconds, shellCopyAndHash, startBenchServer, warm } from "./harness.js";

export async function benchBigfile(options: { workDir: string; sizeMiB: number }): Promise<Result> {
  const source = join(options.workDir, "bigfile-source");
  await makeFixture(source, 1, options.sizeMiB * MiB);
  await warm(source);
  const baseline = await shellCopyAndHash(source, join(options.workDir, "bigfile-copy"));
  const server = await startBenchServer(options.workDir);
  try {
    const client = server.client();
    await register(client, "bench");
    const idle = await server.peakRssBytes();
    await quietDisk();
    const started = performance.now();
    await pullAll(client, "bench", source);
    const took = seconds(started);
    const peak = await server.peakRssBytes();
    return {
      name: "bigfile",
      subject_seconds: took,
      baseline_seconds: baseline,
      ratio: took / baseline,
      peak_rss_bytes: peak,
      idle_rss_bytes: idle,
      size_bytes: options.sizeMiB * MiB,
      table: [
        { what: `modelcache pull of one ${options.sizeMiB} MiB file`, seconds: took.toFixed(3), "peak RSS MB": (peak / 1e6).toFixed(0) },
        { what: "server at rest before the pull", seconds: "", "peak RSS MB": (idle / 1e6).toFixed(0) },
        { what: "cp + openssl dgst -sha256 + sync FILES", seconds: baseline.toFixed(3), "peak RSS MB": "" },
      ],
    };
  } finally {
    await server.stop();
  }
}
