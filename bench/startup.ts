// startup: how long `modelcache --help` takes beside a bare `node -e 0`, and
// the server's resident memory at rest (serving, idle for a few seconds)
// beside a bare node process's. Both run `node bin/modelcache.js`, so they
// measure whatever the bin runs.
import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { healthCheck } from "../test/support/health-check.js";
import { type Result, serverBin } from "./harness.js";

/** Wall time of one run of node with `args`, output discarded. */
async function timeRun(args: string[]): Promise<number> {
  const started = performance.now();
  const child = spawn(process.execPath, args, { stdio: "ignore" });
  const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
  if (code !== 0) throw new Error(`node ${args.join(" ")} exited with ${code}`);
  return (performance.now() - started) / 1000;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

async function rssBytes(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024;
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Runs node with `args` until it is ready, lets it idle, reads its RSS, then stops it. */
async function restingRss(args: string[], ready: () => Promise<boolean>, idleMs: number): Promise<number> {
  const child = spawn(process.execPath, args, { stdio: "ignore" });
  const exited = new Promise((resolve) => child.once("exit", resolve));
  try {
    const until = Date.now() + 60_000;
    while (!(await ready())) {
      if (child.exitCode !== null) throw new Error(`node ${args.join(" ")} exited with ${child.exitCode} before it was ready`);
      if (Date.now() > until) throw new Error(`node ${args.join(" ")} was not ready within a minute`);
      await sleep(100);
    }
    await sleep(idleMs);
    return await rssBytes(child.pid!);
  } finally {
    child.kill("SIGTERM");
    await exited;
  }
}

export async function benchStartup(options: { workDir: string; runs: number; idleSeconds: number }): Promise<Result> {
  const help: number[] = [];
  const bare: number[] = [];
  // one of each first, so that both start with the files in the page cache
  await timeRun([serverBin.path, "--help"]);
  await timeRun(["-e", "0"]);
  for (let i = 0; i < options.runs; i++) {
    help.push(await timeRun([serverBin.path, "--help"]));
    bare.push(await timeRun(["-e", "0"]));
  }
  const dataDir = await mkdtemp(join(options.workDir, "startup-"));
  try {
    const address = `127.0.0.1:${await freePort()}`;
    const serverRss = await restingRss(
      [serverBin.path, "serve", "--listen", address, "--data-dir", dataDir, "--log-level", "warn"],
      async () => (await healthCheck(address)).status === "SERVING",
      options.idleSeconds * 1000,
    );
    const bareRss = await restingRss(["-e", "setInterval(() => {}, 1000)"], async () => true, options.idleSeconds * 1000);
    const helpSeconds = median(help);
    const bareSeconds = median(bare);
    return {
      name: "startup",
      subject_seconds: helpSeconds,
      baseline_seconds: bareSeconds,
      ratio: helpSeconds / bareSeconds,
      rest_rss_bytes: serverRss,
      bare_rss_bytes: bareRss,
      rss_ratio: serverRss / bareRss,
      table: [
        { what: "modelcache --help (median s)", modelcache: helpSeconds.toFixed(3), "bare node": bareSeconds.toFixed(3), ratio: (helpSeconds / bareSeconds).toFixed(2) },
        { what: "server at rest (RSS MB)", modelcache: (serverRss / 1e6).toFixed(1), "bare node": (bareRss / 1e6).toFixed(1), ratio: (serverRss / bareRss).toFixed(2) },
      ],
    };
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
}
