// The package as shipped: `npm pack` yields a tarball that runs on its
// production dependencies alone (compiled JavaScript, no TypeScript loader),
// and `npm start` is the server process, so a signal to npm stops it.
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdir, mkdtemp, readFile, readdir, rm, symlink } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import { expect } from "chai";

const run = promisify(execFile);
const ROOT = join(import.meta.dirname, "..");

/**
 * A module hook that fails the process as soon as anything resolves to
 * TypeScript source or to a TypeScript toolchain package: proof that the
 * shipped code runs as plain JavaScript.
 */
const NO_TYPESCRIPT_HOOK = `data:text/javascript,${encodeURIComponent(`
import { register } from "node:module";
register(${JSON.stringify(
  `data:text/javascript,${encodeURIComponent(`
export async function resolve(specifier, context, next) {
  const found = await next(specifier, context);
  if (/\\.[mc]?ts$/.test(new URL(found.url).pathname) || /\\/node_modules\\/(tsx|typescript|esbuild|@esbuild)\\//.test(found.url)) {
    throw new Error("TypeScript loaded at run time: " + found.url);
  }
  return found;
}`)}`,
)});
`)}`;

/** Output lines of a child until one matches, or the child exits. */
function waitForLine(child: ChildProcess, pattern: RegExp): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = "";
    const onData = (d: Buffer) => {
      out += d.toString();
      const line = out.split("\n").find((l) => pattern.test(l));
      if (line) resolve(line);
    };
    child.stdout!.on("data", onData);
    child.stderr!.on("data", onData);
    child.on("exit", (code) => reject(new Error(`exited ${code} before ${pattern}: ${out}`)));
  });
}

function exited(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => child.on("exit", (code) => resolve(code)));
}

/** Whether something accepts TCP connections at host:port. */
function listening(address: string): Promise<boolean> {
  const [host, port] = [address.slice(0, address.lastIndexOf(":")), Number(address.slice(address.lastIndexOf(":") + 1))];
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

describe("the packed package", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "modelcache-pack-"));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it("runs from the tarball on its production dependencies, loading no TypeScript", async () => {
    // `npm test` builds first; packing without scripts uses that build
    const packed = JSON.parse((await run("npm", ["pack", "--ignore-scripts", "--json", "--pack-destination", dir], { cwd: ROOT })).stdout) as { filename: string; files: { path: string }[] }[];
    const shipped = packed[0]!.files.map((f) => f.path);
    expect(shipped).to.include.members(["bin/modelcache.js", "dist/src/cli/main.js", "dist/generated/modelcache.binpb", "dist/generated/health.binpb", "dist/src/cache/copy-file-worker.cjs"]);
    expect(shipped.filter((p) => p.endsWith(".ts") && !p.endsWith(".d.ts")), "no TypeScript sources").to.deep.equal([]);
    await run("tar", ["-xzf", join(dir, packed[0]!.filename), "-C", dir]);
    const app = join(dir, "package");

    // what `npm install --omit=dev` would put there, offline: every package of the lock file not marked dev
    const lock = JSON.parse(await readFile(join(ROOT, "package-lock.json"), "utf8")) as { packages: Record<string, { dev?: boolean }> };
    const production = Object.entries(lock.packages).filter(([path, meta]) => /^node_modules\/(@[^/]+\/)?[^/]+$/.test(path) && !meta.dev);
    for (const [path] of production) {
      await mkdir(dirname(join(app, path)), { recursive: true });
      await symlink(join(ROOT, path), join(app, path));
    }
    const installed = await readdir(join(app, "node_modules"));
    expect(installed).to.include("@grpc").and.not.include("tsx").and.not.include("typescript");

    const help = await run(process.execPath, ["--import", NO_TYPESCRIPT_HOOK, "bin/modelcache.js", "--help"], { cwd: app });
    expect(help.stdout).to.include("Usage: modelcache").and.include("serve");

    // the server too: it starts, serves and stops on SIGTERM
    const data = join(dir, "data");
    const server = spawn(process.execPath, ["--import", NO_TYPESCRIPT_HOOK, "bin/modelcache.js", "serve", "--listen", "127.0.0.1:0", "--data-dir", data, "--log-format", "json", "--offline"], {
      cwd: app,
      stdio: ["ignore", "pipe", "pipe"],
    });
    try {
      const line = await waitForLine(server, /modelcache is serving/);
      expect(await listening((JSON.parse(line) as { address: string }).address)).to.equal(true);
    } finally {
      server.kill("SIGTERM");
    }
    expect(await exited(server)).to.equal(0);
  });
});

describe("npm start", () => {
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    it(`stops the server when npm gets ${signal}`, async () => {
      const data = await mkdtemp(join(tmpdir(), "modelcache-start-"));
      // --ignore-scripts skips prestart's build: `npm test` has just built
      const npm = spawn("npm", ["start", "--ignore-scripts", "--", "--listen", "127.0.0.1:0", "--data-dir", data, "--log-format", "json", "--offline"], {
        cwd: ROOT,
        stdio: ["ignore", "pipe", "pipe"],
      });
      try {
        const { address } = JSON.parse(await waitForLine(npm, /modelcache is serving/)) as { address: string };
        expect(await listening(address)).to.equal(true);
        npm.kill(signal);
        await exited(npm);
        // npm waits for the script's process; had that been a shell, the server would still be serving here
        expect(await listening(address), "the server still serves after npm exited").to.equal(false);
      } finally {
        npm.kill("SIGKILL");
        await rm(data, { recursive: true, force: true });
      }
    });
  }
});
