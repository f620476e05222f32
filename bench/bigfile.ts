// bigfile: one large file (plus the fixture's four small JSON files) pulled
// from a directory, first pulls (the model and its content dropped before
// each), beside `cp -r` + `openssl dgst -sha256` + `sync` of the same
// directory, in turn, each after `sync` and a pause; the ratio of the medians
// counts, and the server's peak RSS must not grow with the file.
import { join } from "node:path";
import { MiB, type Result, alternatePulls, makeFixture, register, shellCopyAndHash, startBenchServer, warm } from "./harness.js";

export async function benchBigfile(options: { workDir: string; sizeMiB: number; repeat: number }): Promise<Result> {
  const source = join(options.workDir, "bigfile-source");
  await makeFixture(source, 1, options.sizeMiB * MiB);
  await warm(source);
  const server = await startBenchServer(options.workDir);
  try {
    const client = server.client();
    await register(client, "bench");
    const idle = await server.rssBytes();
    const measured = await alternatePulls(client, "bench", options.repeat, () => shellCopyAndHash(source, join(options.workDir, "bigfile-copy")), source, server);
    const peak = await server.peakRssBytes();
    const { subject, base } = measured;
    return {
      name: "bigfile",
      subject_seconds: subject,
      baseline_seconds: base,
      ratio: subject / base,
      peak_rss_bytes: peak,
      idle_rss_bytes: idle,
      size_bytes: options.sizeMiB * MiB,
      subject_runs: measured.pulls,
      server_cpu_seconds_per_pull: measured.cpu,
      baseline_runs: measured.baselines,
      table: [
        { what: `modelcache first pull of one ${options.sizeMiB} MiB file from a directory`, "median s": subject.toFixed(3), "peak RSS MB": (peak / 1e6).toFixed(0) },
        { what: "server at rest before the pull", "median s": "", "peak RSS MB": (idle / 1e6).toFixed(0) },
        { what: "cp -r DIR + openssl dgst -sha256 FILES + sync FILES", "median s": base.toFixed(3), "peak RSS MB": "" },
        { what: `ratio of the medians of ${options.repeat} runs (lower is better)`, "median s": (subject / base).toFixed(2), "peak RSS MB": "" },
        ...(measured.cpu ? [{ what: "server CPU per pull, all threads / main thread (s)", "median s": `${measured.cpu.process.toFixed(2)} / ${measured.cpu.main.toFixed(2)}`, "peak RSS MB": "" }] : []),
      ],
    };
  } finally {
    await server.stop();
  }
}
