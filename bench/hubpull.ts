// hubpull: a generated repository served by the fake hub on loopback (LFS
// shards redirected to its CDN origin), pulled through the gRPC API, beside
// the shell's durable equivalent: curl downloading the same files one after
// another, openssl dgst -sha256 of them, then sync of the downloaded files.
// Runs alternate; the ratio of the medians counts.
import { execFile } from "node:child_process";
import { mkdir, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import { FakeHub } from "../test/support/fake-hub.js";
import { MiB, type Result, alternateRemotePulls, remotePullResult, makeFixture, register, seconds, startBenchServer } from "./harness.js";

const run = promisify(execFile);

export async function benchHubpull(options: { workDir: string; totalMiB: number; shards: number; repeat: number; name?: string }): Promise<Result> {
  const source = join(options.workDir, "hub-source");
  await makeFixture(source, options.shards, Math.floor((options.totalMiB * MiB) / options.shards));
  const hub = await FakeHub.serve("bench/hub-model", source);
  hub.chunkBytes = 1024 * 1024;
  await rm(source, { recursive: true, force: true });
  const files = hub.files.filter((f) => !f.path.startsWith("."));
  const bytes = files.reduce((sum, f) => sum + f.bytes.length, 0);
  const server = await startBenchServer(options.workDir, ["--hub-url", hub.url]);
  try {
    const client = server.client();
    await register(client, "bench", hub.repo);
    const measured = await alternateRemotePulls(client, "bench", options.repeat, () => curlAndHash(hub, files, join(options.workDir, "curl")));
    const peak = await server.peakRssBytes();
    const shape = options.shards === 1 ? `one ${options.totalMiB} MiB file` : `${options.shards} x ${Math.floor(options.totalMiB / options.shards)} MiB`;
    return remotePullResult({ name: options.name ?? "hubpull", measured, repeat: options.repeat, bytes, shape, peakRssBytes: peak, subject: `modelcache pull from the hub, ${shape} (verified, resumable, fsync)`, baseline: "curl one file after another + openssl dgst -sha256 + sync FILES" });
  } finally {
    await server.stop();
    await hub.close();
  }
}

/** The baseline: curl fetches each file in turn (following the CDN redirect), openssl hashes them all, sync makes them durable. */
async function curlAndHash(hub: FakeHub, files: FakeHub["files"], target: string): Promise<number> {
  const started = performance.now();
  for (const file of files) {
    await mkdir(dirname(join(target, file.path)), { recursive: true });
    await run("curl", ["-sSfL", "-o", join(target, file.path), `${hub.url}/${hub.repo}/resolve/${hub.commit}/${file.path}`]);
  }
  await run("bash", ["-c", `find "$1" -type f -exec openssl dgst -sha256 {} + > /dev/null && find "$1" -type f -exec sync {} +`, "hash", target]);
  const took = seconds(started);
  await rm(target, { recursive: true, force: true });
  return took;
}
