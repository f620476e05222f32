// npm run bench [-- names... --pull-mib N ...]: runs the benchmarks, prints
// a table for each and writes .bench/results/<name>.json (servers' logs go
// to .bench/logs/).
import { mkdir, rm, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { Command } from "commander";
import { benchBigfile } from "./bigfile.js";
import { benchDedupe } from "./dedupe.js";
import { benchFanout } from "./fanout.js";
import { OUTPUT_DIR, PROFILE_DIR, type Result, serverBin, serverNodeArgs, workDir } from "./harness.js";
import { benchHubforce, benchHubpull } from "./hubpull.js";
import { benchInspect } from "./inspect.js";
import { benchOcipull } from "./ocipull.js";
import { benchPeers } from "./peers.js";
import { benchPull } from "./pull.js";
import { benchResolve } from "./resolve.js";
import { benchS3pull } from "./s3pull.js";
import { benchServe } from "./serve.js";
import { benchStartup } from "./startup.js";

const ALL = ["pull", "repull", "fanout", "bigfile", "inspect", "hubpull", "hubforce", "startup", "dedupe", "s3pull", "ocipull", "resolve", "serve", "peers"];

const program = new Command("bench")
  .argument("[names...]", `which to run: ${ALL.join(", ")} (default: all)`)
  .option("--pull-mib <n>", "size of the pull fixture", "512")
  .option("--shards <n>", "large files in the pull fixture", "2")
  .option("--repeat <n>", "runs of each pull benchmark (pull, repull, bigfile, hubpull, hubforce, s3pull, dedupe) and of its baseline; the medians count", "3")
  .option("--fanout-mib <n>", "size of the fanout fixture", "512")
  .option("--fanout-clients <n>", "clients attached to the fanout pull", "16")
  .option("--bigfile-mib <n>", "size of the bigfile", "1024")
  .option("--inspect-seconds <n>", "measuring time per level and handler", "3")
  .option("--inspect-levels <list>", "concurrent clients, comma-separated", "1,16,64")
  .option("--hub-mib <n>", "size of the hubpull and hubforce repository of 4 shards", "256")
  .option("--hub-file-mib <n>", "size of the hubpull repository of one LFS file", "512")
  .option("--curl-per-file", "hubpull also times one curl process per file, one after another (the earlier baseline)")
  .option("--cpu-prof", "write a CPU profile of every benchmark server to .bench/profiles/ when it stops")
  .option("--server-bin <path>", "the bin/modelcache.js the servers run (another checkout's, built, to compare builds)")
  .option("--s3-mib <n>", "size of the s3pull model", "1024")
  .option("--oci-mib <n>", "size of the ocipull model (--oci-layers raw layers)", "1024")
  .option("--oci-layers <n>", "raw layers of the ocipull model", "4")
  .option("--dedupe-mib <n>", "size of the dedupe model (4 shards)", "512")
  .option("--resolve-seconds <n>", "measuring time per ResolveModel variant", "3")
  .option("--resolve-clients <n>", "concurrent ResolveModel clients", "16")
  .option("--grpc-js-load", "inspect and resolve: load from grpc-js clients in this process instead of h2load (what a Node caller sees, its own CPU included)", false)
  .option("--serve-mib <n>", "size of the file the serve benchmark downloads", "512")
  .option("--serve-repeat <n>", "GETs of the serve benchmark and of its nginx baseline; the medians count", "5")
  .option("--serve-clients <n>", "concurrent downloads while the serve benchmark reads the server's peak RSS", "8")
  .option("--peers-mib <n>", "size of the LFS file the peers benchmark pulls from a peer and from the hub", "1024")
  .option("--verify-mib <n>", "size of the stored and the pulled model in the verification run", "256")
  .parse();

const options = program.opts<Record<string, string>>();
const names = program.args.length > 0 ? program.args : ALL;
if (options.cpuProf) serverNodeArgs.push("--cpu-prof", "--cpu-prof-dir", PROFILE_DIR);
if (options.serverBin) serverBin.path = resolve(options.serverBin);
for (const name of names) if (!ALL.includes(name)) program.error(`unknown benchmark '${name}': choose from ${ALL.join(", ")}`);

const resultsDir = join(OUTPUT_DIR, "results");
await mkdir(resultsDir, { recursive: true });
const dir = await workDir();
const report = async (result: Result) => {
  console.log(`\n## ${result.name}`);
  console.table(result.table);
  console.log(`ratio ${result.ratio.toFixed(2)}${result.peak_rss_bytes ? `, server peak RSS ${(result.peak_rss_bytes / 1e6).toFixed(0)} MB` : ""}`);
  const { table: _table, ...json } = result;
  await writeFile(join(resultsDir, `${result.name}.json`), `${JSON.stringify({ ...json, measured_at: new Date().toISOString() }, null, 2)}\n`);
};
try {
  if (names.includes("pull") || names.includes("repull")) {
    const { pull, repull } = await benchPull({ workDir: dir, totalMiB: Number(options.pullMib), shards: Number(options.shards), repeat: Number(options.repeat) });
    if (names.includes("pull")) await report(pull);
    if (names.includes("repull")) await report(repull);
  }
  if (names.includes("fanout")) await report(await benchFanout({ workDir: dir, totalMiB: Number(options.fanoutMib), clients: Number(options.fanoutClients) }));
  if (names.includes("bigfile")) await report(await benchBigfile({ workDir: dir, sizeMiB: Number(options.bigfileMib), repeat: Number(options.repeat) }));
  if (names.includes("hubpull")) {
    const curlPerFile = options.curlPerFile !== undefined;
    const hubMib = Number(options.hubMib);
    await report(await benchHubpull({ workDir: dir, totalMiB: hubMib, shards: 4, repeat: Number(options.repeat), name: `hubpull-4x${Math.floor(hubMib / 4)}`, curlPerFile }));
    await report(await benchHubpull({ workDir: dir, totalMiB: Number(options.hubFileMib), shards: 1, repeat: Number(options.repeat), name: "hubpull-1file", curlPerFile }));
  }
  if (names.includes("hubforce")) await report(await benchHubforce({ workDir: dir, totalMiB: Number(options.hubMib), shards: 4, repeat: Number(options.repeat) }));
  if (names.includes("resolve")) {
    await report(await benchResolve({ workDir: dir, seconds: Number(options.resolveSeconds), clients: Number(options.resolveClients), verifyMiB: Number(options.verifyMib), repeat: Number(options.repeat), inProcess: Boolean(options.grpcJsLoad) }));
  }
  if (names.includes("inspect")) {
    await report(await benchInspect({ workDir: dir, seconds: Number(options.inspectSeconds), levels: options.inspectLevels!.split(",").map(Number), inProcess: Boolean(options.grpcJsLoad) }));
  }
  if (names.includes("dedupe")) {
    for (const result of await benchDedupe({ workDir: dir, totalMiB: Number(options.dedupeMib), shards: 4, repeat: Number(options.repeat) })) await report(result);
  }
  if (names.includes("s3pull")) await report(await benchS3pull({ workDir: dir, totalMiB: Number(options.s3Mib), shards: 4, repeat: Number(options.repeat) }));
  if (names.includes("ocipull")) {
    const result = await benchOcipull({ workDir: dir, totalMiB: Number(options.ociMib), layers: Number(options.ociLayers), repeat: Number(options.repeat) });
    if (result) await report(result);
  }
  if (names.includes("serve")) await report(await benchServe({ workDir: dir, sizeMiB: Number(options.serveMib), repeat: Number(options.serveRepeat), clients: Number(options.serveClients) }));
  if (names.includes("peers")) await report(await benchPeers({ workDir: dir, totalMiB: Number(options.peersMib), repeat: Number(options.repeat) }));
  if (names.includes("startup")) await report(await benchStartup({ workDir: dir, runs: 5, idleSeconds: 3 }));
} finally {
  await rm(dir, { recursive: true, force: true });
}
