// hubpull: a generated repository served by the fake hub on loopback (LFS
// shards redirected to its CDN origin), pulled through the gRPC API, beside
// curl downloading the same files one after another plus openssl dgst -sha256.
import { execFile } from "node:child_process";
import { mkdir, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import { FakeHub } from "../test/support/fake-hub.js";
import { MiB, type Result, makeFixture, pullAll, register, seconds, startBenchServer } from "./harness.js";

const run = promisify(execFile);

export async function benchHubpull(options: { workDir: string; totalMiB: number; shards: number }): Promise<Result> {
  const source = join(options.workDir, "hub-source");
  await makeFixture(source, options.shards, Math.floor((options.totalMiB * MiB) / options.shards));
  const hub = await FakeHub.serve("bench/hub-model", source);
  hub.chunkBytes = 1024 * 1024;
  await rm(source, { recursive: true, force: true });
  const files = hub.files.filter((f) => !f.path.startsWith("."));
  const bytes = files.reduce((sum, f) => sum + f.bytes.length, 0);
  try {
    const target = join(options.workDir, "curl");
    let started = performance.now();
    for (const file of files) {
      await mkdir(dirname(join(target, file.path)), { recursive: true });
      await run("curl", ["-sSfL", "-o", join(target, file.path), `${hub.url}/${hub.repo}/resolve/${hub.commit}/${file.path}`]);
    }
    await run("bash", ["-c", `find "$1" -type f -exec openssl dgst -sha256 {} + > /dev/null`, "hash", target]);
    const baseline = seconds(started);
    await rm(target, { recursive: true, force: true });

    const server = await startBenchServer(options.workDir, ["--hub-url", hub.url]);
    try {
      const client = server.client();
      await register(client, "bench", hub.repo);
      started = performance.now();
      await pullAll(client, "bench", "");
      const subject = seconds(started);
      const peak = await server.peakRssBytes();
      return {
        name: "hubpull",
        subject_seconds: subject,
        baseline_seconds: baseline,
        ratio: subject / baseline,
        peak_rss_bytes: peak,
        bytes,
        table: [
          { what: "modelcache pull from the hub (verified, resumable, fsync)", seconds: subject.toFixed(3), "MB/s": (bytes / 1e6 / subject).toFixed(0) },
          { what: "curl one file after another + openssl dgst -sha256", seconds: baseline.toFixed(3), "MB/s": (bytes / 1e6 / baseline).toFixed(0) },
          { what: "ratio (lower is better)", seconds: (subject / baseline).toFixed(2), "MB/s": "" },
        ],
      };
    } finally {
      await server.stop();
    }
  } finally {
    await hub.close();
  }
}
