// deploy/systemd/modelcache.service: what systemd would run is `modelcache
// serve` with flags it accepts, writing only under its data dir, reloaded by
// SIGHUP; and systemd's own checker finds nothing to say about the unit.
import { execFile } from "node:child_process";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, posix } from "node:path";
import { promisify } from "node:util";
import { expect } from "chai";
import { ROOT, flagsOf, readRepoFile, serveFlags } from "../support/deploy-files.js";

const run = promisify(execFile);
const UNIT = "deploy/systemd/modelcache.service";

/** A unit file's settings by section, continuation lines joined, every value of a repeated key kept. */
function parseUnit(text: string): Map<string, Map<string, string[]>> {
  const sections = new Map<string, Map<string, string[]>>();
  let section: Map<string, string[]> | undefined;
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    let line = lines[i]!.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    while (line.endsWith("\\")) line = `${line.slice(0, -1).trimEnd()} ${lines[++i]!.trim()}`;
    const header = /^\[(\w+)\]$/.exec(line);
    if (header) sections.set(header[1]!, (section = new Map()));
    else {
      const [key, value] = [line.slice(0, line.indexOf("=")), line.slice(line.indexOf("=") + 1)];
      section!.set(key, [...(section!.get(key) ?? []), value]);
    }
  }
  return sections;
}

/** Whether any source file reads NOTIFY_SOCKET, i.e. the server sends READY=1. */
async function sendsReady(dir = join(ROOT, "src")): Promise<boolean> {
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile() && /\.(ts|cjs)$/.test(entry.name) && (await readFile(join(entry.parentPath, entry.name), "utf8")).includes("NOTIFY_SOCKET")) return true;
  }
  return false;
}

describe("deploy/systemd/modelcache.service", () => {
  let service: Map<string, string[]>;
  before(async () => {
    service = parseUnit(await readRepoFile(UNIT)).get("Service")!;
  });
  const get = (key: string) => service.get(key)?.at(-1);

  it("runs modelcache serve with only flags and MODELCACHE_ variables it accepts, as Type=notify only if the server sends READY=1", async () => {
    expect(get("Type")).to.equal((await sendsReady()) ? "notify" : "simple");
    const words = get("ExecStart")!.split(/\s+/);
    expect(words.slice(1, 3)).to.deep.equal(["/opt/modelcache/bin/modelcache.js", "serve"]);
    const flags = await serveFlags();
    expect(flagsOf(words.slice(3), flags).unknown, "flags serve does not accept").to.deep.equal([]);
    const variables = (service.get("Environment") ?? []).map((assignment) => assignment.slice(0, assignment.indexOf("=")));
    expect(variables.filter((name) => !flags.env.has(name)), "variables serve does not read").to.deep.equal([]);
  });

  it("is hardened: a dedicated user, a read-only system but for the data dir, no new privileges, no capabilities", async () => {
    const { values } = flagsOf(get("ExecStart")!.split(/\s+/).slice(3), await serveFlags());
    expect(get("User")).to.equal("modelcache");
    expect(get("ProtectSystem")).to.equal("strict");
    expect(get("NoNewPrivileges")).to.equal("yes");
    expect(get("CapabilityBoundingSet")).to.equal("");
    const dataDir = values.get("--data-dir")!;
    expect(get("ReadWritePaths")!.split(/\s+/)).to.deep.equal([dataDir]);
    expect(`/var/lib/${get("StateDirectory")}`).to.equal(dataDir);
    // the cache root and the view are written too: each under a ReadWritePaths entry, the view on the cache root's filesystem (under the data dir)
    const writable = get("ReadWritePaths")!.split(/\s+/);
    for (const dir of [values.get("--cache-dir") ?? `${dataDir}/ai_models_cache`, values.get("--hf-cache-dir")!]) {
      expect(writable.some((path) => dir === path || dir.startsWith(`${path}/`)), `${dir} is writable`).to.equal(true);
    }
    expect(values.get("--hf-cache-dir")!.startsWith(`${dataDir}/`)).to.equal(true);
    expect(posix.dirname(values.get("--models-file")!)).to.equal(`/etc/${get("ConfigurationDirectory")}`);
  });

  it("reloads the models file by SIGHUP to the server's process and stops by SIGTERM with time for pulls to park", () => {
    expect(get("ExecReload")).to.equal("/bin/kill -HUP $MAINPID");
    expect(get("KillSignal")).to.equal("SIGTERM");
    expect(Number(get("TimeoutStopSec"))).to.be.at.least(30);
    expect(get("RestartPreventExitStatus"), "a configuration error (exit 2) is not restarted").to.equal("2");
  });

  it("passes systemd-analyze verify without a warning", async function () {
    const analyze = await run("systemd-analyze", ["--version"]).then(
      () => true,
      () => false,
    );
    if (!analyze) this.skip(); // systemd-analyze is not installed: nothing to verify with
    const dir = await mkdtemp(join(tmpdir(), "modelcache-unit-"));
    try {
      // the unit as installed from this checkout, so that its ExecStart exists
      const unit = (await readRepoFile(UNIT)).replaceAll("/usr/bin/node", process.execPath).replaceAll("/opt/modelcache", ROOT);
      await writeFile(join(dir, "modelcache.service"), unit);
      const verified = await run("systemd-analyze", ["verify", "--man=no", join(dir, "modelcache.service")]);
      expect(verified.stderr + verified.stdout).to.equal("");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
