// serve: GET of an installed file through the hub endpoint (--hub-listen)
// with curl, beside nginx (sendfile on) serving the very same file from the
// install, each from a warm page cache, in alternating turns; then the
// server's peak RSS while 8 clients download the file at once.
import { execFile, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { connect } from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";
import { call } from "../src/cli/client.js";
import { PullPolicy } from "../generated/modelcache/v1/model_cache.js";
import { FakeHub } from "../test/support/fake-hub.js";
import { MiB, type Result, freePort, makeFixture, median, pullAll, register, seconds, startBenchServer } from "./harness.js";

const run = promisify(execFile);
const NGINX = process.env.NGINX ?? "/usr/sbin/nginx";
const FILE = "model-00001-of-00001.safetensors";

export async function benchServe(options: { workDir: string; sizeMiB: number; repeat: number; clients: number }): Promise<Result> {
  const source = join(options.workDir, "serve-source");
  await makeFixture(source, 1, options.sizeMiB * MiB);
  const hub = await FakeHub.serve("bench/serve-model", source);
  hub.chunkBytes = MiB;
  await rm(source, { recursive: true, force: true });
  const hubPort = await freePort();
  const server = await startBenchServer(options.workDir, ["--hub-url", hub.url, "--hub-listen", `127.0.0.1:${hubPort}`]);
  let nginx: Nginx | undefined;
  try {
    const client = server.client();
    await register(client, "bench", hub.repo);
    const rest = await currentRss(server.pid);
    await pullAll(client, "bench", "");
    const { cacheDir } = await call(client, "resolveModel", { name: "bench", pullPolicy: PullPolicy.PULL_POLICY_IF_MISSING, leaseSeconds: 0, credentialAlias: "" });
    const bytes = options.sizeMiB * MiB;
    const subjectUrl = `http://127.0.0.1:${hubPort}/${hub.repo}/resolve/main/${FILE}`;
    // both serve the same inode from memory: read once before anything is timed
    await run("bash", ["-c", `cat "$1" > /dev/null`, "warm", join(cacheDir, FILE)]);
    if (!existsSync(NGINX)) console.warn(`serve: ${NGINX} is missing (apt-get install nginx, or NGINX=PATH): the nginx baseline is skipped`);
    else {
      // a baseline that cannot start is reported and skipped, not a failed bench run
      nginx = await startNginx(options.workDir, cacheDir).catch((err: Error) => {
        console.warn(`serve: nginx did not start (${err.message}): the nginx baseline is skipped`);
        return undefined;
      });
    }
    const baseUrl = nginx && `http://127.0.0.1:${nginx.port}/${FILE}`;

    // one untimed GET each, then the two in turn
    await curlGet(subjectUrl, bytes);
    if (baseUrl) await curlGet(baseUrl, bytes);
    const subjectRuns: number[] = [];
    const baselineRuns: number[] = [];
    for (let i = 0; i < options.repeat; i++) {
      if (baseUrl) baselineRuns.push(await curlGet(baseUrl, bytes));
      subjectRuns.push(await curlGet(subjectUrl, bytes));
    }
    const subject = median(subjectRuns);
    const base = baselineRuns.length > 0 ? median(baselineRuns) : Number.NaN;

    // peak RSS under concurrent downloads: reset the high-water mark the pull left, then read it after
    const reset = await resetPeakRss(server.pid);
    const before = await currentRss(server.pid);
    let polled = 0;
    const poller = setInterval(() => {
      void currentRss(server.pid).then((rss) => (polled = Math.max(polled, rss)), () => undefined);
    }, 20);
    const started = performance.now();
    await Promise.all(Array.from({ length: options.clients }, () => curlGet(subjectUrl, bytes)));
    const concurrentSeconds = seconds(started);
    clearInterval(poller);
    const peak = reset ? await server.peakRssBytes() : polled;
    let baseConcurrent = Number.NaN;
    if (baseUrl) {
      const startedBase = performance.now();
      await Promise.all(Array.from({ length: options.clients }, () => curlGet(baseUrl, bytes)));
      baseConcurrent = seconds(startedBase);
    }

    const rate = (s: number) => (Number.isNaN(s) ? "" : (bytes / 1e6 / s).toFixed(0));
    const fmt = (s: number) => (Number.isNaN(s) ? "skipped (no nginx)" : s.toFixed(3));
    return {
      name: "serve",
      subject_seconds: subject,
      baseline_seconds: base,
      ratio: subject / base,
      peak_rss_bytes: peak,
      peak_rss_method: reset ? "VmHWM after clear_refs 5" : "VmRSS polled every 20 ms",
      size_bytes: bytes,
      subject_runs: subjectRuns,
      baseline_runs: baselineRuns,
      rss_before_bytes: before,
      rss_at_rest_bytes: rest,
      clients: options.clients,
      concurrent_seconds: concurrentSeconds,
      baseline_concurrent_seconds: baseConcurrent,
      table: [
        { what: `modelcache hub endpoint, curl GET of one ${options.sizeMiB} MiB file`, "median s": fmt(subject), "MB/s": rate(subject), "peak RSS MB": "" },
        { what: "nginx (sendfile on), the same file, curl GET", "median s": fmt(base), "MB/s": rate(base), "peak RSS MB": "" },
        { what: `ratio of the medians of ${options.repeat} runs (lower is better, target <= 1.25)`, "median s": Number.isNaN(base) ? "no baseline" : (subject / base).toFixed(2), "MB/s": "", "peak RSS MB": "" },
        { what: `modelcache, ${options.clients} clients at once (target < 150 MB)`, "median s": concurrentSeconds.toFixed(3), "MB/s": rate(concurrentSeconds / options.clients), "peak RSS MB": (peak / 1e6).toFixed(0) },
        { what: "modelcache before those downloads (after the pull and the GETs above)", "median s": "", "MB/s": "", "peak RSS MB": (before / 1e6).toFixed(0) },
        { what: "modelcache at rest, before the pull", "median s": "", "MB/s": "", "peak RSS MB": (rest / 1e6).toFixed(0) },
        { what: `nginx, ${options.clients} clients at once`, "median s": fmt(baseConcurrent), "MB/s": rate(baseConcurrent / options.clients), "peak RSS MB": "" },
      ],
    };
  } finally {
    await nginx?.stop();
    await server.stop();
    await hub.close();
  }
}

/** Seconds curl took to fetch `url` into /dev/null (its own time_total, without its start-up); fails unless all `bytes` came with a 200. */
async function curlGet(url: string, bytes: number): Promise<number> {
  const { stdout } = await run("curl", ["-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{time_total}", url]);
  const [code, size, total] = stdout.trim().split(" ");
  if (code !== "200" || Number(size) !== bytes) throw new Error(`GET ${url}: HTTP ${code}, ${size} of ${bytes} bytes`);
  return Number(total);
}

/** Linux resets VmHWM to the current RSS when 5 is written to clear_refs; false where it cannot. */
async function resetPeakRss(pid: number): Promise<boolean> {
  try {
    await writeFile(`/proc/${pid}/clear_refs`, "5");
    return true;
  } catch {
    // an older kernel or no permission: the caller polls VmRSS instead
    return false;
  }
}

async function currentRss(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024;
}

interface Nginx {
  port: number;
  stop(): Promise<void>;
}

/** nginx in the foreground on a free loopback port, with a config of its own serving `root`: no service, no system config. */
async function startNginx(workDir: string, root: string): Promise<Nginx> {
  const prefix = await mkdtemp(join(workDir, "nginx-"));
  const port = await freePort();
  const config = join(prefix, "nginx.conf");
  await writeFile(
    config,
    `${process.getuid?.() === 0 ? "user root;\n" : ""}worker_processes 1;
error_log ${prefix}/error.log warn;
pid ${prefix}/nginx.pid;
events { worker_connections 64; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  default_type application/octet-stream;
  client_body_temp_path ${prefix}/body;
  proxy_temp_path ${prefix}/proxy;
  fastcgi_temp_path ${prefix}/fastcgi;
  uwsgi_temp_path ${prefix}/uwsgi;
  scgi_temp_path ${prefix}/scgi;
  server {
    listen 127.0.0.1:${port};
    location / { root ${root}; }
  }
}
`,
  );
  const child = spawn(NGINX, ["-c", config, "-p", `${prefix}/`, "-g", "daemon off;"], { stdio: ["ignore", "ignore", "inherit"] });
  const exited = new Promise((resolve) => child.once("exit", resolve));
  for (let tries = 0; ; tries++) {
    if (child.exitCode !== null) throw new Error(`nginx exited with ${child.exitCode}: see ${prefix}/error.log`);
    if (await accepts(port)) break;
    if (tries > 100) throw new Error("nginx did not listen within 10 s");
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return {
    port,
    async stop() {
      child.kill("SIGQUIT");
      await exited;
      await rm(prefix, { recursive: true, force: true });
    },
  };
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}
