// dedupe: what the content store saves. A second model whose files are all
// in the store already, pulled from a directory (read and hashed, nothing
// written) and from the fake hub (nothing downloaded), and a new revision
// with one shard of four changed (one shard downloaded), each timed against
// the first pull of the same files into an empty cache, in the same run.
// Runs alternate; the ratios of the medians count.
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { call } from "../src/cli/client.js";
import { FakeHub } from "../test/support/fake-hub.js";
import { MiB, type Result, makeFixture, median, pullAll, quietDisk, register, seconds, startBenchServer, warm } from "./harness.js";

export async function benchDedupe(options: { workDir: string; totalMiB: number; shards: number; repeat: number }): Promise<Result[]> {
  const source = join(options.workDir, "dedupe-source");
  const shardBytes = Math.floor((options.totalMiB * MiB) / options.shards);
  await makeFixture(source, options.shards, shardBytes);
  await warm(source);
  const hub = await FakeHub.serve("bench/dedupe", source);
  hub.chunkBytes = 1024 * 1024;
  const original = hub.commit;
  const shard = hub.files.find((f) => f.path.endsWith(".safetensors"))!;
  const shape = `${options.shards} x ${Math.floor(options.totalMiB / options.shards)} MiB`;
  const server = await startBenchServer(options.workDir, ["--hub-url", hub.url]);
  const timed = async (name: string, fixtureDir: string) => {
    const started = performance.now();
    await pullAll(client, name, fixtureDir);
    return seconds(started);
  };
  const client = server.client();
  try {
    for (const name of ["dir-first", "dir-second"]) await register(client, name);
    for (const name of ["hub-first", "hub-second", "hub-revision"]) await register(client, name, hub.repo);
    const runs = { dirFirst: [] as number[], dirSecond: [] as number[], hubFirst: [] as number[], hubSecond: [] as number[], revisionFirst: [] as number[], revision: [] as number[] };
    const dropAll = async () => {
      for (const name of ["dir-first", "dir-second", "hub-first", "hub-second", "hub-revision"]) await call(client, "dropCache", { name, force: false });
      await quietDisk();
    };
    for (let i = 0; i < options.repeat; i++) {
      await dropAll();
      runs.dirFirst.push(await timed("dir-first", source));
      await quietDisk();
      runs.dirSecond.push(await timed("dir-second", source));
      await dropAll();
      runs.hubFirst.push(await timed("hub-first", ""));
      await quietDisk();
      runs.hubSecond.push(await timed("hub-second", ""));
      await dropAll();
      runs.revisionFirst.push(await timed("hub-revision", ""));
      hub.commitFile(shard.path, randomBytes(shard.bytes.length));
      await quietDisk();
      runs.revision.push(await timed("hub-revision", ""));
      // back to the first commit, for the next round
      hub.commitFile(shard.path, shard.bytes);
      if (hub.commit !== original) throw new Error("the fake hub did not return to its first commit");
    }
    const result = (name: string, what: string, base: string, subjectRuns: number[], baseRuns: number[]): Result => {
      const subject = median(subjectRuns);
      const baseline = median(baseRuns);
      return {
        name,
        subject_seconds: subject,
        baseline_seconds: baseline,
        ratio: subject / baseline,
        shape,
        subject_runs: subjectRuns,
        baseline_runs: baseRuns,
        table: [
          { what, "median s": subject.toFixed(3) },
          { what: base, "median s": baseline.toFixed(3) },
          { what: `ratio of the medians of ${options.repeat} runs (lower is better)`, "median s": (subject / baseline).toFixed(2) },
        ],
      };
    };
    return [
      result("dedupe-dir", `second model from a directory, all content stored (${shape})`, "first pull of the same directory, empty cache", runs.dirSecond, runs.dirFirst),
      result("dedupe-hub", `second model from the hub, all content stored (${shape})`, "first pull of the same repository, empty cache", runs.hubSecond, runs.hubFirst),
      result("dedupe-revision", `new revision with 1 of ${options.shards} shards changed`, "first pull of the repository, empty cache", runs.revision, runs.revisionFirst),
    ];
  } finally {
    await server.stop();
    await hub.close();
  }
}
