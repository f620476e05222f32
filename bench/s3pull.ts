// s3pull: a generated model in a bucket of a real S3-compatible server on
// loopback (s3rver), pulled through the gRPC API, beside the shell's durable
// equivalent: curl downloading the same objects (an anonymous bucket) one
// after another, openssl dgst -sha256 of them, then sync of the downloaded
// files. Both read the S3 server directly. Runs alternate; the ratio of the
// medians counts.
import { execFile } from "node:child_process";
import { readdir, readFile, rm } from "node:fs/promises";
import { join, relative } from "node:path";
import { promisify } from "node:util";
import { FakeS3 } from "../test/support/fake-s3.js";
import { MiB, type Result, alternatePulls, remotePullResult, makeFixture, register, seconds, startBenchServer } from "./harness.js";

const run = promisify(execFile);
const BUCKET = "bench";

export async function benchS3pull(options: { workDir: string; totalMiB: number; shards: number; repeat: number }): Promise<Result> {
  const source = join(options.workDir, "s3-source");
  await makeFixture(source, options.shards, Math.floor((options.totalMiB * MiB) / options.shards));
  const s3 = await FakeS3.start([BUCKET]);
  const keys: string[] = [];
  let bytes = 0;
  for (const entry of await readdir(source, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const path = relative(source, join(entry.parentPath, entry.name));
    const body = await readFile(join(source, path));
    bytes += body.length;
    keys.push(`model/${path}`);
    await s3.put(BUCKET, { [`model/${path}`]: body });
  }
  await rm(source, { recursive: true, force: true });
  const store = `http://127.0.0.1:${s3.storePort}`;
  const server = await startBenchServer(options.workDir, ["--s3-endpoint", store]);
  try {
    const client = server.client();
    await register(client, "bench", `s3://${BUCKET}/model`);
    const measured = await alternatePulls(client, "bench", options.repeat, () => curlAndHash(store, keys, join(options.workDir, "curl")), "", server);
    const peak = await server.peakRssBytes();
    const shape = `${options.shards} x ${Math.floor(options.totalMiB / options.shards)} MiB`;
    return remotePullResult({ name: "s3pull", measured, repeat: options.repeat, bytes, shape, peakRssBytes: peak, subject: `modelcache pull from S3 (s3rver), ${shape} (verified, resumable, fsync)`, baseline: "curl one object after another + openssl dgst -sha256 + sync FILES" });
  } finally {
    await server.stop();
    await s3.close();
  }
}

/** The baseline: curl fetches each object in turn from the anonymous bucket, openssl hashes them all, sync makes them durable. */
async function curlAndHash(store: string, keys: string[], target: string): Promise<number> {
  const started = performance.now();
  for (const key of keys) {
    await run("curl", ["-sSf", "--create-dirs", "-o", join(target, key), `${store}/${BUCKET}/${key.split("/").map(encodeURIComponent).join("/")}`]);
  }
  await run("bash", ["-c", `find "$1" -type f -exec openssl dgst -sha256 {} + > /dev/null && find "$1" -type f -exec sync {} +`, "hash", target]);
  const took = seconds(started);
  await rm(target, { recursive: true, force: true });
  return took;
}
