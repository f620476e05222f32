// deploy/Dockerfile cannot be built here (no container runtime reaches an image
// registry): what it copies, runs and passes is checked against the repository,
// the packed package and the server's own flags instead.
import { execFile, spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync } from "node:fs";
import { cp, mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { promisify } from "node:util";
import { expect } from "chai";
import { ROOT, flagsOf, readRepoFile, serveFlags } from "../support/deploy-files.js";
import { FIXTURE_DIR, type TestServer, startTestServer } from "../support/test-server.js";

const run = promisify(execFile);

interface Instruction {
  op: string;
  args: string;
  line: number;
}
interface Stage {
  name: string;
  from: string;
  instructions: Instruction[];
}

/** The Dockerfile's stages and their instructions, continuation lines joined, comments left out. */
function parseDockerfile(text: string): Stage[] {
  const stages: Stage[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const start = i;
    let line = lines[i]!;
    if (/^\s*(#|$)/.test(line)) continue;
    while (line.endsWith("\\")) line = line.slice(0, -1) + " " + lines[++i]!.trim();
    const [, op, args] = /^\s*(\w+)\s+(.*)$/.exec(line)!;
    const instruction = { op: op!.toUpperCase(), args: args!.trim(), line: start + 1 };
    if (instruction.op === "FROM") {
      const [, from, name] = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(instruction.args)!;
      stages.push({ name: name ?? String(stages.length), from: from!, instructions: [] });
    } else stages.at(-1)!.instructions.push(instruction);
  }
  return stages;
}

/** A COPY's options, sources and destination (exec form or words). */
function parseCopy(args: string): { from?: string; sources: string[]; dest: string } {
  const words = args.startsWith("[") ? (JSON.parse(args) as string[]) : args.split(/\s+/);
  const from = words.find((w) => w.startsWith("--from="))?.slice("--from=".length);
  const paths = words.filter((w) => !w.startsWith("--"));
  return { from, sources: paths.slice(0, -1), dest: paths.at(-1)! };
}

/** Whether .dockerignore's patterns leave a path out of the build context (the forms the file uses: dir/, *.ext, name). */
function ignored(path: string, patterns: string[]): boolean {
  const clean = path.replace(/^\.?\//, "").replace(/\/$/, "");
  return patterns.some((pattern) => {
    const p = pattern.replace(/\/$/, "");
    if (p.startsWith("*.")) return clean.endsWith(p.slice(1));
    return clean === p || clean.startsWith(`${p}/`);
  });
}

describe("deploy/Dockerfile", () => {
  let stages: Stage[];
  let ignore: string[];
  before(async () => {
    stages = parseDockerfile(await readRepoFile("deploy/Dockerfile"));
    ignore = (await readRepoFile(".dockerignore")).split("\n").filter((l) => l.trim() !== "" && !l.startsWith("#"));
  });
  const stage = (name: string) => stages.find((s) => s.name === name)!;
  const workdir = (s: Stage) => s.instructions.find((i) => i.op === "WORKDIR")!.args;

  it("builds in a stage with dev dependencies and runs from an official Node 20 slim image pinned by version", () => {
    expect(stages.map((s) => s.name)).to.deep.equal(["build", "runtime"]);
    for (const s of stages) expect(s.from, s.name).to.match(/^node:20\.\d+\.\d+-\w+-slim$/);
    const build = stage("build").instructions.filter((i) => i.op === "RUN").map((i) => i.args);
    expect(build.some((r) => /^npm ci\b/.test(r) && !r.includes("--omit=dev"))).to.equal(true);
    expect(build).to.include("npm run build");
  });

  it("copies from the build context only paths that exist and .dockerignore keeps", () => {
    const copies = stages.flatMap((s) => s.instructions.filter((i) => i.op === "COPY").map((i) => ({ ...parseCopy(i.args), line: i.line })));
    const fromContext = copies.filter((c) => c.from === undefined).flatMap((c) => c.sources.map((source) => ({ source, line: c.line })));
    expect(fromContext.length).to.be.greaterThan(5);
    const missing = fromContext.filter(({ source }) => !existsSync(join(ROOT, source)));
    expect(missing, "COPY sources missing from the repository").to.deep.equal([]);
    expect(fromContext.filter(({ source }) => ignored(source, ignore)), "COPY sources .dockerignore leaves out").to.deep.equal([]);
  });

  it("gives the runtime stage from the build stage only what `npm run build` makes and `npm pack` ships", async () => {
    // `npm test` builds first; packing without scripts lists that build
    const packed = JSON.parse((await run("npm", ["pack", "--dry-run", "--ignore-scripts", "--json"], { cwd: ROOT })).stdout) as { files: { path: string }[] }[];
    const shipped = packed[0]!.files.map((f) => f.path);
    const buildDir = workdir(stage("build"));
    const fromBuild = stage("runtime")
      .instructions.filter((i) => i.op === "COPY")
      .map((i) => parseCopy(i.args))
      .filter((c) => c.from === "build")
      .flatMap((c) => c.sources);
    expect(fromBuild).to.include(`${buildDir}/dist/`);
    for (const source of fromBuild) {
      expect(source.startsWith(`${buildDir}/`), source).to.equal(true);
      const path = source.slice(buildDir.length + 1);
      expect(existsSync(join(ROOT, path)), `${path} after npm run build`).to.equal(true);
      expect(shipped.some((file) => file === path || file.startsWith(path.endsWith("/") ? path : `${path}/`)), `${path} is in what npm pack ships`).to.equal(true);
    }
    expect(shipped).to.include("dist/src/cli/main.js");
  });

  it("installs no dev dependency in the runtime stage, and runs no lifecycle script there (prepare would build, without tsc)", async () => {
    const runtime = stage("runtime").instructions;
    const installs = runtime.filter((i) => i.op === "RUN" && /\bnpm (ci|install|i)\b/.test(i.args)).map((i) => i.args);
    expect(installs).to.have.length(1);
    expect(installs[0]).to.match(/^npm ci --omit=dev\b/);
    const scripts = (JSON.parse(await readRepoFile("package.json")) as { scripts: Record<string, string> }).scripts;
    if (scripts.prepare || scripts.preinstall || scripts.install || scripts.postinstall) expect(installs[0]).to.match(/ --ignore-scripts\b/);
    const dev = Object.keys((JSON.parse(await readRepoFile("package.json")) as { devDependencies: Record<string, string> }).devDependencies);
    for (const name of dev) expect(installs[0], name).not.to.include(name);
    // nor brings the build stage's node_modules (which holds them)
    const copies = runtime.filter((i) => i.op === "COPY").map((i) => i.args);
    expect(copies.filter((c) => c.includes("node_modules"))).to.deep.equal([]);
  });

  it("runs modelcache serve as a fixed non-root uid, on 0.0.0.0, with the data dir on a volume, passing only flags serve accepts", async () => {
    const runtime = stage("runtime").instructions;
    const entrypoint = JSON.parse(runtime.find((i) => i.op === "ENTRYPOINT")!.args) as string[];
    const cmd = JSON.parse(runtime.find((i) => i.op === "CMD")!.args) as string[];
    expect(entrypoint.slice(-2)).to.deep.equal([`${workdir(stage("runtime"))}/bin/modelcache.js`, "serve"]);
    const flags = await serveFlags();
    const args = [...entrypoint, ...cmd];
    expect(flagsOf(args, flags).unknown, "flags serve does not accept").to.deep.equal([]);

    const env = new Map(
      runtime
        .filter((i) => i.op === "ENV")
        .flatMap((i) => [...i.args.matchAll(/(\w+)=(\S+)/g)])
        .map((m) => [m[1]!, m[2]!] as const),
    );
    const unknownEnv = [...env.keys()].filter((name) => name.startsWith("MODELCACHE_") && !flags.env.has(name));
    expect(unknownEnv, "MODELCACHE_ variables serve does not read").to.deep.equal([]);
    expect(env.get("MODELCACHE_LISTEN")).to.match(/^0\.0\.0\.0:\d+$/);
    const grpcPort = env.get("MODELCACHE_LISTEN")!.split(":")[1]!;
    const metricsPort = env.get("MODELCACHE_METRICS_LISTEN")!.split(":")[1]!;
    expect(runtime.find((i) => i.op === "EXPOSE")!.args.split(/\s+/)).to.have.members([grpcPort, metricsPort]);
    expect(runtime.find((i) => i.op === "VOLUME")!.args).to.include(env.get("MODELCACHE_DATA_DIR")!);

    const user = runtime.find((i) => i.op === "USER")!.args;
    expect(user).to.match(/^[1-9]\d*:[1-9]\d*$/);
    expect(runtime.find((i) => i.op === "RUN" && i.args.includes("useradd"))!.args).to.include(`--uid ${user.split(":")[0]}`);

    // the health check finds the port in MODELCACHE_LISTEN, which `docker run -e` may change
    const health = runtime.find((i) => i.op === "HEALTHCHECK")!.args;
    expect(JSON.parse(health.slice(health.indexOf("CMD ") + 4))).to.deep.equal(["node", "/app/deploy/health-check.mjs"]);
  });
});

describe("deploy/health-check.mjs (the image's HEALTHCHECK)", () => {
  let t: TestServer;
  beforeEach(async () => {
    t = await startTestServer();
  });
  afterEach(() => t.close());
  const check = (address: string) =>
    run(process.execPath, [join(ROOT, "deploy", "health-check.mjs"), address]).then(
      (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
      (err: { code: number; stdout: string; stderr: string }) => err,
    );

  it("exits 0 on a serving server, through grpc.health.v1 with no binary beyond node", async () => {
    const ok = await check(t.server.address);
    expect(ok.code, ok.stderr).to.equal(0);
    expect(ok.stdout.trim()).to.equal("SERVING");
  });

  it("checks MODELCACHE_LISTEN's port on loopback when given no address, as the image's HEALTHCHECK runs it", async () => {
    const port = t.server.address.slice(t.server.address.lastIndexOf(":") + 1);
    const ok = await run(process.execPath, [join(ROOT, "deploy", "health-check.mjs")], { env: { ...process.env, MODELCACHE_LISTEN: `0.0.0.0:${port}` } });
    expect(ok.stdout.trim()).to.equal("SERVING");
  });

  it("exits 1, saying why, when nothing serves the address", async () => {
    const address = t.server.address;
    await t.close();
    t = await startTestServer();
    const down = await check(address);
    expect(down.code).to.equal(1);
    expect(down.stderr).to.match(/^unhealthy: /);
  });
});

/** The runtime stage's instructions, carried out in a directory: its installs run, its COPYs copy (from the build stage: this checkout after `npm run build`). */
async function stageRuntime(dir: string, stage: Stage): Promise<{ app: string; env: Record<string, string> }> {
  let workdir = "/";
  const env: Record<string, string> = {};
  const at = (path: string) => join(dir, path.startsWith("/") ? path : join(workdir, path));
  for (const { op, args } of stage.instructions) {
    if (op === "WORKDIR") {
      workdir = args;
      await mkdir(at(workdir), { recursive: true });
    } else if (op === "ENV") {
      for (const m of args.matchAll(/(\w+)=(\S+)/g)) env[m[1]!] = m[2]!;
    } else if (op === "COPY") {
      const { from, sources, dest } = parseCopy(args);
      for (const source of sources) {
        const origin = from === undefined ? join(ROOT, source) : join(ROOT, source.replace(/^\/build\//, ""));
        const target = dest.endsWith("/") && !source.endsWith("/") ? join(at(dest), source.split("/").at(-1)!) : at(dest);
        await mkdir(dirname(target), { recursive: true });
        await cp(origin, target, { recursive: true });
      }
    } else if (op === "RUN" && /^npm /.test(args)) {
      // the registry's packages from npm's cache, which the checkout's own `npm ci` filled
      await run("sh", ["-c", args], { cwd: at(workdir), env: { ...process.env, ...env, npm_config_prefer_offline: "true" }, maxBuffer: 16 * 2 ** 20 });
    }
    // RUN groupadd/useradd and chown: the image's user, which the directory does not need
  }
  return { app: at(workdir), env };
}

describe("deploy/Dockerfile's runtime stage, reproduced in a directory", function () {
  this.timeout(300_000);
  let dir: string;
  let server: ReturnType<typeof spawn> | undefined;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "modelcache-image-"));
  });
  after(async () => {
    if (server && server.exitCode === null) {
      server.kill("SIGKILL");
      await once(server, "exit");
    }
    await rm(dir, { recursive: true, force: true });
  });

  it("serves from only what the stage installs and copies: health SERVING, a pull through the copy worker, its events as proto3 JSON", async () => {
    const stages = parseDockerfile(await readRepoFile("deploy/Dockerfile"));
    const { app, env } = await stageRuntime(join(dir, "root"), stages.find((s) => s.name === "runtime")!);
    expect(existsSync(join(app, "node_modules", "typescript")), "a dev dependency in the runtime stage").to.equal(false);
    const entrypoint = JSON.parse(stages.at(-1)!.instructions.find((i) => i.op === "ENTRYPOINT")!.args) as string[];
    const binary = join(dir, "root", entrypoint[1]!);
    const dataDir = join(dir, "data");
    // the image's environment, on loopback and a free port instead of 0.0.0.0:50051
    const childEnv = { PATH: process.env.PATH!, HOME: dataDir, ...env, MODELCACHE_DATA_DIR: dataDir, MODELCACHE_LISTEN: "127.0.0.1:0", MODELCACHE_METRICS_LISTEN: "127.0.0.1:0", MODELCACHE_FIXTURE_ROOT: dirname(FIXTURE_DIR) };
    server = spawn(process.execPath, [binary, ...entrypoint.slice(2)], { cwd: "/", env: childEnv, stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    server.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
    const address = await new Promise<string>((resolve, reject) => {
      createInterface({ input: server!.stdout! }).on("line", (line) => {
        const entry = JSON.parse(line) as { msg?: string; address?: string };
        if (entry.msg === "modelcache is serving") resolve(entry.address!);
      });
      server!.once("exit", (code) => reject(new Error(`the staged server exited (code ${code}): ${stderr}`)));
    });
    const health = await run(process.execPath, [join(dir, "root", "app", "deploy", "health-check.mjs"), address], { cwd: "/" });
    expect(health.stdout.trim()).to.equal("SERVING");

    const cli = (...args: string[]) => run(process.execPath, [binary, ...args], { cwd: "/", env: { ...childEnv, MODELCACHE_ADDRESS: address } });
    await cli("models", "register", "minilm", "--source", "sentence-transformers/all-MiniLM-L6-v2", "--dimensions", "384");
    const pulled = (await cli("pull", "minilm", "--fixture-dir", FIXTURE_DIR, "--json")).stdout.trim().split("\n");
    const last = JSON.parse(pulled.at(-1)!) as { completed?: { status: string } };
    expect(last.completed?.status).to.equal("CACHE_STATUS_INSTALLED");
  });
});
