// hubpull: a generated repository served by the fake hub on loopback (LFS
// shards redirected to its CDN origin), pulled through the gRPC API, beside
// the shell's durable equivalent as a user types it: one curl for all the
// files (`curl -sSfL --create-dirs -o A URL_A -o B URL_B ...`, one process,
// its connection reused), `openssl dgst -sha256` of them, then `sync` of the
// downloaded files. Runs alternate; the ratio of the medians counts.
// hubforce: a forced pull of the installed repository beside a first pull of it.
import { execFile } from "node:child_process";
import { mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { call } from "../src/cli/client.js";
import { FakeHub } from "../test/support/fake-hub.js";
import { MiB, type Result, alternatePulls, makeFixture, median, pullAll, quietDisk, register, remotePullResult, seconds, startBenchServer } from "./harness.js";

const run = promisify(execFile);

export async function benchHubpull(options: { workDir: string; totalMiB: number; shards: number; repeat: number; name?: string; curlPerFile?: boolean }): Promise<Result> {
  const { hub, files, bytes } = await serveRepository(options.workDir, options.totalMiB, options.shards);
  const server = await startBenchServer(options.workDir, ["--hub-url", hub.url]);
  try {
    const client = server.client();
    const rest = await server.rssBytes();
    await register(client, "bench", hub.repo);
    const target = join(options.workDir, "curl");
    const measured = await alternatePulls(client, "bench", options.repeat, () => curlAndHash(hub, files, target, "one"), "", server);
    const peak = await server.peakRssBytes();
    const shape = shapeOf(options.totalMiB, options.shards);
    const result = remotePullResult({
      name: options.name ?? "hubpull",
      measured,
      repeat: options.repeat,
      bytes,
      shape,
      peakRssBytes: peak,
      restRssBytes: rest,
      subject: `modelcache first pull from the hub, ${shape} (verified, resumable, fsync)`,
      baseline: "curl -sSfL --create-dirs -o F1 URL1 -o F2 URL2 ... (one process) + openssl dgst -sha256 FILES + sync FILES",
    });
    if (options.curlPerFile) {
      // the earlier, slower baseline: one curl process (and connection) per file, one after another
      const runs: number[] = [];
      for (let i = 0; i < options.repeat; i++) {
        await quietDisk();
        runs.push(await curlAndHash(hub, files, target, "each"));
      }
      const perFile = median(runs);
      result.curl_per_file_seconds = perFile;
      result.curl_per_file_runs = runs;
      result.table.push({ what: "curl -sSfL -o F URL per file, one after another + openssl + sync FILES", "median s": perFile.toFixed(3), "MB/s": (bytes / 1e6 / perFile).toFixed(0) });
      result.table.push({ what: "ratio against the per-file curl", "median s": (result.subject_seconds / perFile).toFixed(2), "MB/s": "" });
    }
    return result;
  } finally {
    await server.stop();
    await hub.close();
  }
}

/**
 * A forced pull (every file fetched again, the stored copies hashed again)
 * of the installed repository, beside a first pull of it (the model and its
 * content dropped first), in turn, each on a quiet disk.
 */
export async function benchHubforce(options: { workDir: string; totalMiB: number; shards: number; repeat: number }): Promise<Result> {
  const { hub, bytes } = await serveRepository(options.workDir, options.totalMiB, options.shards);
  const server = await startBenchServer(options.workDir, ["--hub-url", hub.url]);
  try {
    const client = server.client();
    await register(client, "bench", hub.repo);
    await pullAll(client, "bench", "");
    const first: number[] = [];
    const forced: number[] = [];
    for (let i = 0; i < options.repeat; i++) {
      await call(client, "dropCache", { name: "bench", force: false });
      await quietDisk();
      let started = performance.now();
      await pullAll(client, "bench", "");
      first.push(seconds(started));
      await quietDisk();
      started = performance.now();
      await pullAll(client, "bench", "", undefined, true);
      forced.push(seconds(started));
    }
    const subject = median(forced);
    const base = median(first);
    const shape = shapeOf(options.totalMiB, options.shards);
    const peak = await server.peakRssBytes();
    return {
      name: "hubforce",
      subject_seconds: subject,
      baseline_seconds: base,
      ratio: subject / base,
      peak_rss_bytes: peak,
      bytes,
      shape,
      subject_runs: forced,
      baseline_runs: first,
      table: [
        { what: `modelcache pull --force of the installed ${shape}`, "median s": subject.toFixed(3) },
        { what: "modelcache first pull (model and content dropped before)", "median s": base.toFixed(3) },
        { what: `ratio of the medians of ${options.repeat} runs (lower is better)`, "median s": (subject / base).toFixed(2) },
      ],
    };
  } finally {
    await server.stop();
    await hub.close();
  }
}

function shapeOf(totalMiB: number, shards: number): string {
  return shards === 1 ? `one ${totalMiB} MiB file` : `${shards} x ${Math.floor(totalMiB / shards)} MiB`;
}

async function serveRepository(workDir: string, totalMiB: number, shards: number): Promise<{ hub: FakeHub; files: FakeHub["files"]; bytes: number }> {
  const source = join(workDir, "hub-source");
  await makeFixture(source, shards, Math.floor((totalMiB * MiB) / shards));
  const hub = await FakeHub.serve("bench/hub-model", source);
  hub.chunkBytes = MiB;
  await rm(source, { recursive: true, force: true });
  const files = hub.files.filter((f) => !f.path.startsWith("."));
  return { hub, files, bytes: files.reduce((sum, f) => sum + f.bytes.length, 0) };
}

/**
 * The baseline: curl fetches the files (following the CDN redirect), `one`
 * process for all of them or `each` in its own; openssl hashes them all, sync
 * makes them durable.
 */
async function curlAndHash(hub: FakeHub, files: FakeHub["files"], target: string, curl: "one" | "each"): Promise<number> {
  await rm(target, { recursive: true, force: true });
  await mkdir(target, { recursive: true });
  const url = (path: string) => `${hub.url}/${hub.repo}/resolve/${hub.commit}/${path}`;
  const started = performance.now();
  if (curl === "one") await run("curl", ["-sSfL", "--create-dirs", ...files.flatMap((f) => ["-o", join(target, f.path), url(f.path)])]);
  else for (const file of files) await run("curl", ["-sSfL", "--create-dirs", "-o", join(target, file.path), url(file.path)]);
  await run("bash", ["-c", `find "$1" -type f -exec openssl dgst -sha256 {} + > /dev/null && find "$1" -type f -exec sync {} +`, "hash", target]);
  const took = seconds(started);
  await rm(target, { recursive: true, force: true });
  return took;
}
