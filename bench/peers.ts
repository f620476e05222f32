// peers: one node pulling a generated model (one large LFS file) from a peer
// server that holds it (--peers), against the same pull by another node from
// the fake hub on loopback. Both are verified, resumable and synced; the peer
// pull also asks the peer first (a HEAD) and reads from its hub endpoint.
// Runs alternate; the ratio of the medians counts.
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { FakeHub } from "../test/support/fake-hub.js";
import { call } from "../test/support/test-server.js";
import type { ModelCacheServiceClient } from "../generated/modelcache/v1/model_cache.js";
import { MiB, type Result, freePort, makeFixture, median, pullAll, quietDisk, register, seconds, startBenchServer } from "./harness.js";

export async function benchPeers(options: { workDir: string; totalMiB: number; repeat: number }): Promise<Result> {
  const source = join(options.workDir, "peers-source");
  await makeFixture(source, 1, options.totalMiB * MiB);
  const hub = await FakeHub.serve("bench/peer-model", source);
  hub.chunkBytes = 1024 * 1024;
  await rm(source, { recursive: true, force: true });
  const bytes = hub.files.filter((f) => f.lfs).reduce((sum, f) => sum + f.bytes.length, 0);
  const hubPort = await freePort();
  const holder = await startBenchServer(options.workDir, ["--hub-url", hub.url, "--hub-listen", `127.0.0.1:${hubPort}`]);
  const fromPeer = await startBenchServer(options.workDir, ["--hub-url", hub.url, "--peers", `http://127.0.0.1:${hubPort}`]);
  const fromHub = await startBenchServer(options.workDir, ["--hub-url", hub.url]);
  try {
    const clients = { holder: holder.client(), peer: fromPeer.client(), hub: fromHub.client() };
    for (const client of Object.values(clients)) await register(client, "bench", hub.repo);
    await pullAll(clients.holder, "bench", "");
    const timed = async (client: ModelCacheServiceClient) => {
      await call(client, "dropCache", { name: "bench", force: false }).catch(() => undefined);
      await quietDisk();
      const started = performance.now();
      await pullAll(client, "bench", "");
      return seconds(started);
    };
    // a warm-up of each that does not count
    await timed(clients.peer);
    await timed(clients.hub);
    const peerRuns: number[] = [];
    const hubRuns: number[] = [];
    for (let i = 0; i < options.repeat; i++) {
      hubRuns.push(await timed(clients.hub));
      peerRuns.push(await timed(clients.peer));
    }
    const subject = median(peerRuns);
    const base = median(hubRuns);
    // a peer pull the hub served would measure the hub twice
    if (hub.files.some((f) => f.lfs && hub.sent(f.path) !== f.bytes.length * (2 + options.repeat))) {
      throw new Error("the hub sent LFS bytes to the node pulling from its peer: the peers benchmark measured nothing");
    }
    const rate = (s: number) => (bytes / 1e6 / s).toFixed(0);
    return {
      name: "peers",
      subject_seconds: subject,
      baseline_seconds: base,
      ratio: subject / base,
      peak_rss_bytes: await fromPeer.peakRssBytes(),
      bytes,
      subject_runs: peerRuns,
      baseline_runs: hubRuns,
      table: [
        { what: `modelcache pull of one ${options.totalMiB} MiB LFS file from a peer (--peers)`, "median s": subject.toFixed(3), "MB/s": rate(subject) },
        { what: "the same pull from the test hub", "median s": base.toFixed(3), "MB/s": rate(base) },
        { what: `ratio of the medians of ${options.repeat} runs (lower is better)`, "median s": (subject / base).toFixed(2), "MB/s": "" },
      ],
    };
  } finally {
    await fromHub.stop();
    await fromPeer.stop();
    await holder.stop();
    await hub.close();
  }
}
