// ocipull: a generated model of raw layers (default 1 GiB, 4 x 256 MiB)
// pushed to Debian's docker-registry (the CNCF distribution registry, on a
// loopback port, filesystem storage in a temp dir), pulled through the gRPC
// API from an oci:// source, beside the shell's durable equivalent: ONE curl
// fetching the same blobs (`curl -sSfL -o a URL_A -o b URL_B ...`), openssl
// dgst -sha256 of each, then sync of the downloaded files. Runs alternate;
// the ratio of the medians counts.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { call } from "../src/cli/client.js";
import { OciRegistry, registryAvailable, REGISTRY_BINARY } from "../test/support/oci-registry.js";
import { modelSpec } from "../test/support/test-server.js";
import { MiB, type Result, alternatePulls, remotePullResult, seconds, startBenchServer } from "./harness.js";

const run = promisify(execFile);
const REPO = "bench/model";

export async function benchOcipull(options: { workDir: string; totalMiB: number; layers: number; repeat: number }): Promise<Result | undefined> {
  if (!registryAvailable) {
    console.warn(`ocipull skipped: ${REGISTRY_BINARY} is missing (install Debian's docker-registry)`);
    return undefined;
  }
  const registry = await OciRegistry.start();
  try {
    const layerBytes = Math.floor((options.totalMiB * MiB) / options.layers);
    const layers: { digest: string; size: number; path: string }[] = [];
    const block = randomBytes(MiB);
    for (let i = 0; i < options.layers; i++) {
      // one layer in memory at a time; no two MiB alike
      const data = Buffer.allocUnsafe(layerBytes);
      for (let at = 0; at < layerBytes; at += MiB) {
        block.writeUInt32LE(i * 1_000_003 + at / MiB, 0);
        block.copy(data, at, 0, Math.min(MiB, layerBytes - at));
      }
      const path = `model-${String(i + 1).padStart(5, "0")}-of-${String(options.layers).padStart(5, "0")}.safetensors`;
      layers.push({ ...(await registry.pushBlob(REPO, data)), path });
    }
    const config = await registry.pushBlob(REPO, JSON.stringify({ descriptor: { name: REPO } }));
    await registry.pushManifest(REPO, "v1", {
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      artifactType: "application/vnd.cncf.model.manifest.v1+json",
      config: { mediaType: "application/vnd.cncf.model.config.v1+json", ...config },
      layers: layers.map((l) => ({ mediaType: "application/vnd.cncf.model.weight.v1.raw", digest: l.digest, size: l.size, annotations: { "org.cncf.model.filepath": l.path } })),
    });
    const bytes = layers.reduce((sum, l) => sum + l.size, 0);
    const server = await startBenchServer(options.workDir, ["--oci-plain-http", registry.address]);
    try {
      const client = server.client();
      await call(client, "registerModel", { model: modelSpec({ name: "bench", source: `oci://${registry.address}/${REPO}`, revision: "v1" }) });
      const urls = layers.map((l) => `http://${registry.address}/v2/${REPO}/blobs/${l.digest}`);
      const measured = await alternatePulls(client, "bench", options.repeat, () => curlAndHash(urls, join(options.workDir, "curl")), "", server);
      const peak = await server.peakRssBytes();
      const shape = `${options.layers} x ${Math.floor(options.totalMiB / options.layers)} MiB raw layers`;
      return remotePullResult({ name: "ocipull", measured, repeat: options.repeat, bytes, shape, peakRssBytes: peak, subject: `modelcache pull from docker-registry (oci://), ${shape} (verified, resumable, fsync)`, baseline: "one curl -sSfL -o a URL_A -o b URL_B ... + openssl dgst -sha256 + sync FILES" });
    } finally {
      await server.stop();
    }
  } finally {
    await registry.close();
  }
}

/** The baseline: one curl fetches every blob in turn on one connection, openssl hashes them all, sync makes them durable. */
async function curlAndHash(urls: string[], target: string): Promise<number> {
  await mkdir(target, { recursive: true });
  const started = performance.now();
  await run("curl", ["-sSfL", ...urls.flatMap((url, i) => ["-o", join(target, `blob-${i}`), url])]);
  await run("bash", ["-c", `find "$1" -type f -exec openssl dgst -sha256 {} + > /dev/null && find "$1" -type f -exec sync {} +`, "hash", target]);
  const took = seconds(started);
  await rm(target, { recursive: true, force: true });
  return took;
}
