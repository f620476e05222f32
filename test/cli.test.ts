import { spawn } from "node:child_process";
import { type AddressInfo, createServer } from "node:net";
import { mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import { join, relative } from "node:path";
import { expect } from "chai";
import { BIN, type CliOptions, type CliRun, runCli } from "./support/run-cli.js";
import { type Certificates, makeCertificates } from "./support/certificates.js";
import { makeSourceDir, sha256 } from "./support/source-dir.js";
import { FIXTURE_DIR, type TestServer, call, startTestServer } from "./support/test-server.js";
import { PullPolicy } from "../generated/modelcache/v1/model_cache.js";

/** Runs the real CLI against the test server. */
function cli(t: TestServer, args: string[], options: CliOptions = {}): Promise<CliRun> {
  return runCli(t.server.address, args, options);
}

describe("the modelcache client commands", () => {
  let t: TestServer;
  beforeEach(async () => {
    t = await startTestServer();
  });
  afterEach(() => t.close());
  const register = () => cli(t, ["models", "register", "minilm", "--source", "org/minilm", "--dimensions", "8"]);

  it("registers with the defaults a models file gets: revision main for a hub repo, none for an s3:// source, latest for an oci:// one; task embedding", async () => {
    expect((await cli(t, ["models", "register", "hub", "--source", "org/minilm", "--dimensions", "8"])).code).to.equal(0);
    expect((await cli(t, ["models", "register", "bucket", "--source", "s3://models/minilm", "--dimensions", "8"])).code).to.equal(0);
    expect((await cli(t, ["models", "register", "oci", "--source", "oci://registry.example.com:5000/models/minilm", "--dimensions", "8"])).code).to.equal(0);
    const { parseModelsFile } = await import("../src/models-file/parse-models-file.js");
    const filed = parseModelsFile(
      "models:\n  - {name: hub, source: org/minilm, dimensions: 8}\n  - {name: bucket, source: s3://models/minilm, dimensions: 8}\n  - {name: oci, source: oci://registry.example.com:5000/models/minilm, dimensions: 8}\n",
      "models.yaml",
    );
    for (const spec of filed) {
      const { model } = await call(t.client, "getModel", { name: spec.name });
      expect([model!.revision, model!.task]).to.deep.equal([spec.revision, 1]);
    }
    expect(filed.map((s) => s.revision)).to.deep.equal(["main", "", "latest"]);
  });

  it("registers, lists, pulls (a line per file), inspects and drops, exiting 0", async () => {
    expect((await register()).code).to.equal(0);
    const list = await cli(t, ["models", "list"]);
    expect(list.stdout).to.match(/^NAME\s+STATUS/).and.include("minilm").and.include("registered");
    const pulled = await cli(t, ["pull", "minilm", "--fixture-dir", FIXTURE_DIR]);
    expect(pulled.code).to.equal(0);
    for (const file of ["1_Pooling/config.json", "config.json", "model.safetensors", "tokenizer.json"]) expect(pulled.stdout).to.include(`  ${file}  `);
    expect(pulled.stdout).to.match(/installed 4 files, .* at .*minilm\n$/);
    const inspected = await cli(t, ["inspect", "minilm", "--deep"]);
    expect(inspected.code).to.equal(0);
    expect(inspected.stdout).to.include("installed");
    expect((await cli(t, ["drop", "minilm"])).stdout).to.include("dropped minilm");
    expect((await call(t.client, "getModel", { name: "minilm" })).model!.cacheDir).to.equal("");
  });

  it("shows the cache as a table or as proto3 JSON, and prunes (with --dry-run only reporting)", async () => {
    await register();
    await cli(t, ["pull", "minilm", "--fixture-dir", FIXTURE_DIR]);
    const cache = await cli(t, ["cache"]);
    expect(cache.code).to.equal(0);
    expect(cache.stdout).to.include(t.cacheRoot).and.include("reclaimable").and.match(/MODEL\s+SIZE\s+EXCLUSIVE\s+LAST USED\s+PINNED\s+LEASES\nminilm\s/);
    const described = JSON.parse((await cli(t, ["cache", "--json"])).stdout.trim());
    expect(described.cacheRoot).to.equal(t.cacheRoot);
    expect(described.models.map((m: { name: string }) => m.name)).to.deep.equal(["minilm"]);
    // an unreferenced blob, as a crash would leave
    await writeFile(join(t.cacheRoot, ".blobs", "sha256", sha256("orphan")), "orphan");
    expect((await cli(t, ["prune", "--dry-run"])).stdout).to.equal("would remove 1 unreferenced blob, 0 partial downloads: 6 B\n");
    expect((await cli(t, ["prune"])).stdout).to.equal("removed 1 unreferenced blob, 0 partial downloads: 6 B\n");
    expect(JSON.parse((await cli(t, ["prune", "--json"])).stdout.trim())).to.deep.equal({});
  });

  it("prints only proto3-JSON objects, one per line, with --json", async () => {
    await register();
    const pulled = await cli(t, ["pull", "minilm", "--fixture-dir", FIXTURE_DIR, "--json"]);
    const events = pulled.stdout.trim().split("\n").map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(Object.keys(events[0]!)).to.include("started");
    expect(Object.keys(events.at(-1)!)).to.include("completed");
    // canonical proto3 JSON: 64-bit integers as strings, timestamps in RFC 3339
    expect((events[0]!.started as { totalBytes: unknown }).totalBytes).to.equal("5039");
    const completed = events.at(-1)!.completed as { manifest: { totalSizeBytes: unknown; installedAt: unknown } };
    expect(completed.manifest.totalSizeBytes).to.equal("5039");
    expect(completed.manifest.installedAt).to.match(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
    const listed = JSON.parse((await cli(t, ["models", "list", "--json"])).stdout.trim());
    expect(listed).to.include({ name: "minilm", status: "MODEL_STATUS_INSTALLED" });
    const report = JSON.parse((await cli(t, ["inspect", "minilm", "--json"])).stdout.trim());
    expect(report.status).to.equal("CACHE_STATUS_INSTALLED");
  });

  it("exits 3 for an unknown model, 5 for a missing install, 4 for an unhealthy one, 2 for bad usage", async () => {
    const unknown = await cli(t, ["models", "get", "ghost"]);
    expect(unknown.code).to.equal(3);
    expect(unknown.stderr).to.include("error: local AI model 'ghost' is not registered").and.not.include("    at ");
    await register();
    expect((await cli(t, ["inspect", "minilm"])).code).to.equal(5);
    await cli(t, ["pull", "minilm", "--fixture-dir", FIXTURE_DIR]);
    const { rm } = await import("node:fs/promises");
    await rm(join(t.cacheRoot, "minilm", "config.json"));
    expect((await cli(t, ["inspect", "minilm"])).code).to.equal(4);
    expect((await cli(t, ["models", "frobnicate"])).code).to.equal(2);
    expect((await cli(t, ["pull"])).code).to.equal(2);
  });

  it("refuses a bad number or word in a flag before calling the server, naming the flag, exit 2", async () => {
    for (const dimensions of ["abc", "-1", "1.5", "99999999999", ""]) {
      const run = await cli(t, ["models", "register", "minilm", "--source", "org/minilm", "--dimensions", dimensions]);
      expect(run.code, dimensions).to.equal(2);
      expect(run.stderr, dimensions).to.include("option '--dimensions <n>'").and.include("whole number from 1 to 4294967295");
    }
    const policy = await cli(t, ["models", "register", "minilm", "--source", "org/minilm", "--dimensions", "8", "--pull-policy", "bogus"]);
    expect(policy.code).to.equal(2);
    expect(policy.stderr).to.include("'--pull-policy <policy>'").and.include("never, if-missing, always");
    // nothing reached the server
    expect((await call(t.client, "listModels", {})).models).to.deep.equal([]);
    const serve = await cli(t, ["serve", "--max-concurrent-pulls", "two"]);
    expect(serve.code).to.equal(2);
    expect(serve.stderr).to.include("'--max-concurrent-pulls <n>'");
    const fromEnv = await cli(t, ["serve"], { env: { MODELCACHE_MAX_FILE_BYTES: "1e9" } });
    expect(fromEnv.code).to.equal(2);
    expect(fromEnv.stderr).to.include("MODELCACHE_MAX_FILE_BYTES").and.include("such as 500MB or 10GiB");
    const registered = await cli(t, ["models", "register", "minilm", "--source", "org/minilm", "--dimensions", "8", "--pull-policy", "if-missing"]);
    expect(registered.code, registered.stderr).to.equal(0);
  });

  it("models update changes only the fields given, keeps include, exclude and the pin, and says when the install no longer matches", async () => {
    const registered = await cli(t, ["models", "register", "minilm", "--source", "org/minilm", "--dimensions", "8", "--revision", "v1", "--pull-policy", "never", "--include", "*.json", "*.safetensors", "--exclude", "tokenizer*", "--pin"]);
    expect(registered.code, registered.stderr).to.equal(0);
    expect((await cli(t, ["pull", "minilm", "--fixture-dir", FIXTURE_DIR])).code).to.equal(0);
    const model = async () => (await call(t.client, "getModel", { name: "minilm" })).model!;
    const widened = await cli(t, ["models", "update", "minilm", "--dimensions", "16"]);
    expect(widened.code, widened.stderr).to.equal(0);
    expect(widened.stdout).to.not.include("pull again");
    expect(await model()).to.deep.include({ dimensions: 16, source: "org/minilm", revision: "v1", pullPolicy: PullPolicy.PULL_POLICY_NEVER, include: ["*.json", "*.safetensors"], exclude: ["tokenizer*"], pinned: true });
    const moved = await cli(t, ["models", "update", "minilm", "--revision", "v2"]);
    expect(moved.code, moved.stderr).to.equal(0);
    expect(moved.stdout).to.include("the install of minilm was pulled with the old revision: pull again to apply ('modelcache pull minilm')");
    expect(await model()).to.deep.include({ revision: "v2", dimensions: 16, include: ["*.json", "*.safetensors"], pinned: true });
    const cleared = await cli(t, ["models", "update", "minilm", "--no-include", "--no-pin", "--json"]);
    expect(cleared.code, cleared.stderr).to.equal(0);
    expect(JSON.parse(cleared.stdout.trim())).to.include({ name: "minilm", revision: "v2" });
    expect(cleared.stderr).to.include("note: the install of minilm was pulled with the old include: pull again to apply");
    expect(await model()).to.deep.include({ include: [], exclude: ["tokenizer*"], pinned: false, dimensions: 16 });
    const nothing = await cli(t, ["models", "update", "minilm"]);
    expect(nothing.code).to.equal(2);
    expect(nothing.stderr).to.include("give at least one field to change");
  });

  it("answers models show as models get", async () => {
    await register();
    const shown = await cli(t, ["models", "show", "minilm", "--json"]);
    expect(shown.code, shown.stderr).to.equal(0);
    expect(JSON.parse(shown.stdout.trim())).to.include({ name: "minilm", source: "org/minilm" });
  });

  it("prints a usage error and one line pointing to the command's --help, not the whole help page, exit 2", async () => {
    const run = await cli(t, ["models", "register", "minilm", "--source", "org/minilm"]);
    expect(run.code).to.equal(2);
    expect(run.stderr).to.equal("error: required option '--dimensions <n>' not specified\nhint: 'modelcache models register --help' shows what it takes\n");
    const unknown = await cli(t, ["pull", "minilm", "--frobnicate"]);
    expect(unknown.code).to.equal(2);
    expect(unknown.stderr).to.include("unknown option '--frobnicate'").and.include("hint: 'modelcache pull --help'").and.not.include("Options:");
  });

  it("names the CLI's flags, not the request's fields, in the server's messages", async () => {
    await register();
    const missing = await cli(t, ["pull", "minilm", "--fixture-dir", "/nonexistent/dir"]);
    expect(missing.stderr).to.include("--fixture-dir '/nonexistent/dir' does not exist").and.not.include("fixture_dir");
    await cli(t, ["pull", "minilm", "--fixture-dir", FIXTURE_DIR]);
    const installed = await cli(t, ["models", "rm", "minilm"]);
    expect(installed.code).to.equal(1);
    expect(installed.stderr).to.include("pass --drop-cache to remove its artifacts with it, or run 'modelcache drop' first").and.not.include("drop_cache");
    const leased = await cli(t, ["resolve", "minilm", "--lease", "1h"]);
    expect(leased.code, leased.stderr).to.equal(0);
    const dropped = await cli(t, ["drop", "minilm"]);
    expect(dropped.code).to.equal(1);
    expect(dropped.stderr).to.include("release it ('modelcache leases release ID')").and.include("pass --force to end the leases").and.not.include("set force");
  });

  it("refuses an empty secret from stdin with exit 2, storing nothing", async () => {
    const run = await cli(t, ["secrets", "put", "hf"], { stdin: "\n" });
    expect(run.code).to.equal(2);
    expect(run.stderr).to.include("error: the secret read from stdin is empty; nothing was stored");
    expect(await t.server.runtime.registry.vault.get("hf")).to.equal(undefined);
  });

  it("prints the path and the lease id alone with resolve --quiet, JSON with --json, and lists leases with leases list", async () => {
    await register();
    await cli(t, ["pull", "minilm", "--fixture-dir", FIXTURE_DIR]);
    const quiet = await cli(t, ["resolve", "minilm", "--lease", "1h", "--quiet"]);
    expect(quiet.code, quiet.stderr).to.equal(0);
    const [dir, leaseId, ...rest] = quiet.stdout.split("\n");
    expect(dir).to.equal(join(t.cacheRoot, "minilm"));
    expect(leaseId).to.match(/^[0-9a-f-]{36}$/);
    expect(rest).to.deep.equal([""]);
    const json = JSON.parse((await cli(t, ["resolve", "minilm", "--lease", "30m", "--json"])).stdout.trim());
    expect(json.leaseId).to.be.a("string").and.not.equal(leaseId);
    const listed = await cli(t, ["leases", "list"]);
    expect(listed.code, listed.stderr).to.equal(0);
    const lines = listed.stdout.trim().split("\n");
    expect(lines[0]).to.match(/^LEASE\s+MODEL\s+EXPIRES AT\s+HOLDER$/);
    // the one ending first first
    expect(lines[1]).to.match(new RegExp(`^${json.leaseId}\\s+minilm\\s+\\d{4}-\\S+Z\\s+\\S+`));
    expect(lines[2]).to.match(new RegExp(`^${leaseId}\\s+minilm\\s`));
    const one = (await cli(t, ["leases", "list", "minilm", "--json"])).stdout.trim().split("\n").map((line) => JSON.parse(line));
    expect(one.map((l: { leaseId: string }) => l.leaseId)).to.deep.equal([json.leaseId, leaseId]);
    expect(one[0]).to.have.keys("leaseId", "name", "expiresAt", "holder");
    expect((await cli(t, ["leases", "list", "ghost"])).code).to.equal(3);
    await cli(t, ["leases", "release", leaseId!]);
    await cli(t, ["leases", "release", json.leaseId]);
    expect((await cli(t, ["leases", "list"])).stdout).to.equal("(none)\n");
  });

  it("refuses a path as a source at registration, naming the field and its shape", async () => {
    const run = await cli(t, ["models", "register", "minilm", "--source", "../../etc", "--dimensions", "8"]);
    expect(run.code).to.equal(1);
    expect(run.stderr).to.include("--source '../../etc' is neither a hub repo id nor an s3:// location").and.include("'owner/name'").and.not.include("model.source");
    expect((await call(t.client, "listModels", {})).models).to.deep.equal([]);
  });

  it("marks the options a command requires in its help", async () => {
    const help = await cli(t, ["models", "register", "--help"]);
    expect(help.stdout).to.match(/--source <repo>[^]*\(required\)[^]*--dimensions <n>\s+embedding width \(required\)/);
    expect(help.stdout).to.match(/--revision <rev>\s+commit, tag or branch \(default: main; s3: none;\s+oci: a tag or sha256: digest, default latest\)\n/);
  });

  it("exits 1 with the server's message and a hint when the call fails", async () => {
    await register();
    const failed = await cli(t, ["pull", "minilm", "--fixture-dir", "/nonexistent/dir"]);
    expect(failed.code).to.equal(1);
    expect(failed.stderr).to.include("does not exist or is not a directory").and.include("hint: the message names the field to fix");
    const twice = await register();
    expect(twice.code).to.equal(1);
    expect(twice.stderr).to.include("already registered").and.include("hint: 'modelcache models update' changes a registered model");
    expect(twice.stderr).to.not.match(/\n\s+at /);
  });

  /** Runs `secrets put hf` under a pseudo-terminal (`script`), typing the secret once `ready` shows on the screen. */
  async function typeSecret(shellCommand: string, ready: string, secret: string): Promise<{ code: unknown; screen: string }> {
    const child = spawn("script", ["-qfec", shellCommand, "/dev/null"], {
      env: { ...process.env, MODELCACHE_ADDRESS: t.server.address },
      stdio: ["pipe", "pipe", "pipe"],
    });
    let screen = "";
    child.stdout!.on("data", (d: Buffer) => {
      const before = screen;
      screen += d.toString();
      if (!before.includes(ready) && screen.includes(ready)) child.stdin!.write(`${secret}\r`);
    });
    const code = await new Promise((resolve) => child.on("exit", resolve));
    return { code, screen };
  }

  it("asks for a secret at a terminal without echoing it", async () => {
    const { code, screen } = await typeSecret(`${process.execPath} ${BIN} secrets put hf`, "(not shown): ", "hf_typed_at_a_terminal");
    expect(code, screen).to.equal(0);
    expect(screen).to.include("secret for hf (not shown): ").and.include("stored a secret under hf");
    expect(screen).to.not.include("hf_typed_at_a_terminal");
    expect(await t.server.runtime.registry.vault.get("hf")).to.equal("hf_typed_at_a_terminal");
  });

  it("does not echo a typed secret when stderr, where the prompt goes, is redirected", async () => {
    const dir = await mkdtemp(join(tmpdir(), "modelcache-prompt-"));
    try {
      // the prompt lands in the file: the secret is typed once it is there
      const log = join(dir, "stderr.log");
      const shell = `${process.execPath} ${BIN} secrets put hf 2>${log}; echo done-$?`;
      const child = spawn("script", ["-qfec", shell, "/dev/null"], { env: { ...process.env, MODELCACHE_ADDRESS: t.server.address }, stdio: ["pipe", "pipe", "pipe"] });
      let screen = "";
      child.stdout!.on("data", (d: Buffer) => (screen += d.toString()));
      while (!(await readFile(log, "utf8").catch(() => "")).includes("(not shown): ")) await sleep(20);
      child.stdin!.write("hf_typed_with_stderr_redirected\r");
      await new Promise((resolve) => child.on("exit", resolve));
      expect(screen).to.include("done-0").and.not.include("hf_typed_with_stderr_redirected");
      expect(await t.server.runtime.registry.vault.get("hf")).to.equal("hf_typed_with_stderr_redirected");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("sends a relative --fixture-dir as an absolute path, resolved where the CLI runs", async () => {
    await register();
    const relativeDir = relative(process.cwd(), FIXTURE_DIR);
    expect(relativeDir.startsWith("/")).to.equal(false);
    const pulled = await cli(t, ["pull", "minilm", "--fixture-dir", relativeDir]);
    expect(pulled.code, pulled.stderr).to.equal(0);
    expect(pulled.stdout).to.include(`dir:${FIXTURE_DIR}`);
  });

  it("reads a secret from stdin and never echoes it", async () => {
    const stored = await cli(t, ["secrets", "put", "hf"], { stdin: "hf_super_secret\n" });
    expect(stored.code).to.equal(0);
    expect(stored.stdout + stored.stderr).to.not.include("hf_super_secret");
    expect(await t.server.runtime.registry.vault.get("hf")).to.equal("hf_super_secret");
    expect((await cli(t, ["secrets", "rm", "hf"])).stdout).to.include("removed hf");
  });

  it("cancels the pull on Ctrl-C: exit 130, nothing installed, no staging left", async () => {
    await register();
    const source = await makeSourceDir({ "a.bin": Buffer.alloc(256 * 1024 * 1024, 1), "b.bin": Buffer.alloc(256 * 1024 * 1024, 2) });
    try {
      const run = await cli(t, ["pull", "minilm", "--fixture-dir", source.dir], {
        during: (child, out) => {
          const timer = setInterval(() => {
            if (out().includes("pulling minilm")) {
              clearInterval(timer);
              child.kill("SIGINT");
            }
          }, 5);
        },
      });
      expect(run.code).to.equal(130);
      expect(run.stderr).to.include("interrupted: this client stopped following the pull of minilm");
      await t.server.runtime.locks.idle();
      expect(await readdir(join(t.cacheRoot, ".staging"))).to.deep.equal([]);
      expect(await readdir(t.cacheRoot)).to.not.include("minilm");
    } finally {
      await source.cleanup();
    }
  });
});

describe("Ctrl-C in a client following someone else's pull", () => {
  it("says this client stopped following and the pull goes on; the other client's pull completes", async () => {
    const t = await startTestServer();
    const source = await makeSourceDir({ "a.bin": Buffer.alloc(256 * 1024 * 1024, 1), "b.bin": Buffer.alloc(256 * 1024 * 1024, 2) });
    try {
      await call(t.client, "registerModel", { model: (await import("./support/test-server.js")).modelSpec() });
      const { pull } = await import("./support/test-server.js");
      let startedFirst!: () => void;
      const first = new Promise<void>((resolve) => (startedFirst = resolve));
      const owner = pull(t.client, { name: "minilm", fixtureDir: source.dir }, { onEvent: (event) => event.started && startedFirst() });
      await first;
      const follower = await runCli(t.server.address, ["pull", "minilm", "--fixture-dir", source.dir], {
        during: (child, out) => {
          const timer = setInterval(() => {
            if (out().includes("pulling minilm")) {
              clearInterval(timer);
              child.kill("SIGINT");
            }
          }, 5);
        },
      });
      expect(follower.code).to.equal(130);
      expect(follower.stderr).to.include("this client stopped following the pull of minilm").and.include("otherwise the pull goes on");
      expect(follower.stderr).to.not.include("nothing was installed");
      const outcome = await owner;
      expect(outcome.error).to.equal(undefined);
      expect(outcome.events.at(-1)!.completed, "the owner's pull ended with completed").to.not.equal(undefined);
    } finally {
      await t.close();
      await source.cleanup();
    }
  });
});

describe("modelcache pull --detach", () => {
  it("returns once the server has the pull, which goes on without the client and installs the model", async () => {
    const { FakeHub } = await import("./support/fake-hub.js");
    const made = await makeSourceDir({ "model.safetensors": Buffer.alloc(256 * 1024, 5), "config.json": "{}" });
    const hub = await FakeHub.serve("acme/slow", made.dir);
    // held to a crawl (a second per 4 KiB) until the client has gone, so the pull is surely still running then
    hub.chunkBytes = 4096;
    hub.faults.bytesPerSecond = 4096;
    const t = await startTestServer({ hubUrl: hub.url });
    try {
      await call(t.client, "registerModel", { model: (await import("./support/test-server.js")).modelSpec({ source: "acme/slow" }) });
      const run = await runCli(t.server.address, ["pull", "minilm", "--detach"]);
      expect(run.code, run.stderr).to.equal(0);
      expect(run.stdout).to.match(/^pull of minilm started from hub:acme\/slow@\w+: 2 files, 256\.0 KiB; it runs on the server without this client; 'modelcache pull minilm' follows it/);
      const job = t.server.runtime.pulls.find("minilm");
      expect(job?.state, "the pull outlived its client").to.equal("running");
      // the server has seen the client go before the hub speeds up
      while (job!.subscriberCount > 0) await sleep(10);
      expect(job!.state).to.equal("running");
      hub.faults.bytesPerSecond = undefined;
      await job!.done;
      const { model } = await call(t.client, "getModel", { name: "minilm" });
      expect(model!.cacheDir).to.equal(join(t.cacheRoot, "minilm"));
    } finally {
      await t.close();
      await hub.close();
      await made.cleanup();
    }
  });
});

describe("modelcache pull on a terminal", () => {
  it("draws live progress bars that redraw in place, then the summary", async () => {
    const { FakeHub } = await import("./support/fake-hub.js");
    const made = await makeSourceDir({ "model.safetensors": Buffer.alloc(6 * 1024 * 1024, 3), "config.json": "{}" });
    const hub = await FakeHub.serve("acme/bars", made.dir);
    hub.faults.bytesPerSecond = 6 * 1024 * 1024;
    const t = await startTestServer({ hubUrl: hub.url, progressIntervalMs: 0 });
    try {
      await call(t.client, "registerModel", { model: (await import("./support/test-server.js")).modelSpec({ source: "acme/bars" }) });
      // `script` gives the CLI a pseudo-terminal, as a person's shell would
      const child = spawn("script", ["-qfec", `${process.execPath} ${BIN} pull minilm`, "/dev/null"], {
        env: { ...process.env, MODELCACHE_ADDRESS: t.server.address, COLUMNS: "120" },
        stdio: ["pipe", "pipe", "pipe"],
      });
      let screen = "";
      child.stdout!.on("data", (d: Buffer) => (screen += d.toString()));
      const code = await new Promise((resolve) => child.on("exit", resolve));
      expect(code).to.equal(0);
      const frames = screen.split(/\r|\u001b\[\d*[AGK]/).filter((frame) => /total \[[█░]+\]\s+\d+%/.test(frame));
      expect(frames.length, "the total bar is drawn more than once").to.be.above(2);
      const percents = frames.map((f) => Number(/total \[[█░]+\]\s+(\d+)%/.exec(f)![1]));
      expect(percents.at(-1)).to.equal(100);
      expect(Math.min(...percents)).to.be.below(100);
      expect(screen).to.match(/installed 2 files, .* at /);
    } finally {
      await t.close();
      await hub.close();
      await made.cleanup();
    }
  });
});

describe("the CLI's hints", () => {
  it("asks whether a server runs at an address where nothing listens", async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const address = `127.0.0.1:${(closed.address() as AddressInfo).port}`;
    await new Promise((resolve) => closed.close(resolve));
    const run = await runCli(address, ["models", "list"]);
    expect(run.code).to.equal(1);
    expect(run.stderr).to.include("ECONNREFUSED").and.include(`hint: is a server running at ${address}?`).and.not.include("Resolution note");
  });

  it("gives up on an address that accepts the connection and never answers, at --connect-timeout", async () => {
    const silent = createServer(() => undefined);
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    const address = `127.0.0.1:${(silent.address() as AddressInfo).port}`;
    try {
      const run = await runCli(address, ["--connect-timeout", "300", "models", "list"]);
      expect(run.code).to.equal(1);
      expect(run.stderr).to.include(`no gRPC server answered at ${address} within 300 ms`);
    } finally {
      silent.close();
    }
  });

  describe("with TLS on one side only", () => {
    let certs: Certificates;
    before(async () => {
      certs = await makeCertificates();
    });
    after(() => certs.cleanup());

    it("points a plaintext client of a TLS server at --tls-ca, and a TLS client of a plaintext server at leaving TLS out", async () => {
      const secure = await startTestServer({ tls: { cert: certs.serverCert, key: certs.serverKey } });
      const plain = await startTestServer();
      try {
        const plaintextClient = await runCli(secure.server.address, ["models", "list"]);
        expect(plaintextClient.code).to.equal(1);
        expect(plaintextClient.stderr).to.include("if the server uses TLS, connect with --tls-ca FILE");
        const tlsClient = await runCli(plain.server.address, ["models", "list", "--tls-ca", certs.ca]);
        expect(tlsClient.code).to.equal(1);
        expect(tlsClient.stderr).to.include(`the server at ${plain.server.address} does not speak TLS`);
        const untrusting = await runCli(secure.server.address, ["models", "list", "--tls"]);
        expect(untrusting.stderr).to.include("pass the CA that signed it with --tls-ca FILE");
      } finally {
        await secure.close();
        await plain.close();
      }
    });
  });

  it("sends a revision the hub does not have to the model's spec, an unknown model to the list, an unreachable hub to the server's side", async () => {
    const { FakeHub } = await import("./support/fake-hub.js");
    const hub = await FakeHub.serve("acme/model", FIXTURE_DIR);
    const t = await startTestServer({ hubUrl: hub.url });
    try {
      await runCli(t.server.address, ["models", "register", "minilm", "--source", "acme/model", "--dimensions", "8", "--revision", "v9"]);
      const missingRevision = await runCli(t.server.address, ["pull", "minilm"]);
      expect(missingRevision.code).to.equal(3);
      expect(missingRevision.stderr).to.include("the hub has no").and.include("hint: 'modelcache models get NAME' shows the model's source and revision");
      const unknown = await runCli(t.server.address, ["inspect", "ghost"]);
      expect(unknown.stderr).to.include("hint: 'modelcache models list' shows the registered models");
    } finally {
      await t.close();
      await hub.close();
    }
    const unreachable = await startTestServer({ hubUrl: "http://127.0.0.1:1" });
    try {
      await runCli(unreachable.server.address, ["models", "register", "minilm", "--source", "acme/model", "--dimensions", "8"]);
      const run = await runCli(unreachable.server.address, ["pull", "minilm"]);
      expect(run.code).to.equal(1);
      expect(run.stderr).to.include("cannot reach the hub").and.include("hint: the server is up, but it or something it depends on (the hub) is not ready").and.not.include("is a server running");
    } finally {
      await unreachable.close();
    }
  });
});

describe("modelcache serve's start-up errors", () => {
  let dataDir: string;
  beforeEach(async () => {
    dataDir = await mkdtemp(join(tmpdir(), "modelcache-serve-"));
  });
  afterEach(() => rm(dataDir, { recursive: true, force: true }));

  it("reports a port in use as one JSON line, with no line of grpc-js's own", async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
    try {
      const listen = `127.0.0.1:${(taken.address() as AddressInfo).port}`;
      const run = await runCli("", ["serve", "--listen", listen, "--data-dir", dataDir, "--log-format", "json"]);
      expect(run.code).to.equal(1);
      const lines = (run.stdout + run.stderr).split("\n").filter(Boolean);
      for (const line of lines) expect(() => JSON.parse(line), line).to.not.throw();
      expect(lines.map((line) => JSON.parse(line) as { error?: string }).find((l) => l.error)?.error).to.include(`cannot listen on ${listen}`);
    } finally {
      taken.close();
    }
  });

  it("stops the start with exit 2 when --fixture-dir does not exist, naming the flag and the path", async () => {
    const missing = join(dataDir, "no-such-models");
    const run = await runCli("", ["serve", "--listen", "127.0.0.1:0", "--data-dir", join(dataDir, "data"), "--fixture-dir", missing, "--log-format", "json"]);
    expect(run.code).to.equal(2);
    expect(run.stdout + run.stderr).to.include(`--fixture-dir '${missing}' does not exist or is not a directory`);
    expect(await readdir(dataDir), "nothing was started").to.deep.equal([]);
  });

  it("works without a home directory: --help and client commands run, and serve without --data-dir exits 2 saying to give it", async () => {
    const noHome = { NODE_OPTIONS: `--require ${join(import.meta.dirname, "support", "no-home.cjs")}` };
    const help = await runCli("", ["--help"], { env: noHome });
    expect(help.code, help.stderr).to.equal(0);
    expect(help.stdout).to.include("Usage: modelcache");
    const serve = await runCli("", ["serve", "--listen", "127.0.0.1:0", "--log-format", "json"], { env: noHome });
    expect(serve.code).to.equal(2);
    expect(serve.stdout + serve.stderr).to.include("give --data-dir or MODELCACHE_DATA_DIR");
    // given --data-dir, the start goes on to the next check
    const missing = join(dataDir, "no-such-models");
    const given = await runCli("", ["serve", "--listen", "127.0.0.1:0", "--data-dir", join(dataDir, "data"), "--fixture-dir", missing, "--log-format", "json"], { env: noHome });
    expect(given.stdout + given.stderr).to.include(`--fixture-dir '${missing}' does not exist`).and.not.include("--data-dir is needed");
    // a client command needs no data dir: it reaches for the server and says it is not there
    const client = await runCli("127.0.0.1:1", ["models", "list"], { env: noHome });
    expect(client.stderr).to.not.include("ERR_SYSTEM_ERROR");
    expect(client.stderr).to.match(/127\.0\.0\.1:1/);
  });

  it("takes sizes and durations in every byte-size and duration flag, plain numbers too, and says when a lease was capped", async () => {
    const { spawnServer } = await import("./support/child-server.js");
    const big = await makeSourceDir({ "weights.bin": Buffer.alloc(5000, 7) });
    const server = await spawnServer({
      dataDir,
      args: ["--max-bytes-per-second", "10MiB", "--max-file-bytes", "4KiB", "--max-pull-bytes", "1048576", "--parallel-range-min-bytes", "64MiB", "--parallel-range-below-bytes-per-second", "100MB", "--verify-bytes-per-second", "1MB", "--max-lease-seconds", "1h"],
    });
    try {
      const cli = (args: string[]) => runCli(server.address, args);
      expect((await cli(["models", "register", "minilm", "--source", "org/minilm", "--dimensions", "8"])).code).to.equal(0);
      expect((await cli(["models", "register", "big", "--source", "org/big", "--dimensions", "8"])).code).to.equal(0);
      const refused = await cli(["pull", "big", "--fixture-dir", big.dir]);
      expect(refused.code).to.equal(6);
      expect(refused.stderr).to.include("more than --max-file-bytes (4096)");
      expect((await cli(["pull", "minilm", "--fixture-dir", FIXTURE_DIR])).code).to.equal(0);
      const capped = await cli(["resolve", "minilm", "--lease", "2h"]);
      expect(capped.code, capped.stderr).to.equal(0);
      const [, leaseLine] = capped.stdout.split("\n");
      expect(leaseLine).to.match(/^lease \S+ until (\S+) \(capped by the server's --max-lease-seconds: asked until \S+, granted until \S+\)$/);
      const granted = Date.parse(/ until (\S+) /.exec(leaseLine!)![1]!);
      expect(granted - Date.now()).to.be.within(3500 * 1000, 3600 * 1000);
      const within = await cli(["resolve", "minilm", "--lease", "30m"]);
      expect(within.stdout).to.match(/\nlease \S+ until \S+\n$/).and.not.include("capped");
    } finally {
      await server.kill();
      await big.cleanup();
    }
  });

  it("reports a malformed --listen or --metrics-listen as malformed, exit 2, before starting anything", async () => {
    for (const [flag, value] of [["--listen", "nonsense"], ["--listen", "127.0.0.1"], ["--listen", "127.0.0.1:70000"], ["--metrics-listen", "[nope]:9090"]]) {
      const run = await runCli("", ["serve", flag!, value!, "--data-dir", dataDir]);
      expect(run.code, value).to.equal(2);
      expect(run.stderr, value).to.include(`option '${flag} <host:port>' argument '${value}' is invalid. It is malformed`).and.not.include("is not a loopback address");
    }
    expect(await readdir(dataDir), "nothing was started").to.deep.equal([]);
  });
});

describe("modelcache serve on SIGHUP", () => {
  it("reads the --auth-tokens file again: a token added is accepted without a restart, an invalid file keeps the tokens before", async () => {
    const { spawnServer } = await import("./support/child-server.js");
    const dir = await mkdtemp(join(tmpdir(), "modelcache-hup-"));
    const tokensFile = join(dir, "tokens.json");
    const logFile = join(dir, "server.log");
    const newToken = async (name: string) => /^token: (\S+)$/m.exec((await runCli("", ["tokens", "new", "--name", name, "--role", "admin", "--file", tokensFile])).stdout)![1]!;
    const loggedTimes = async (text: string) => (await readFile(logFile, "utf8").catch(() => "")).split(text).length - 1;
    const hangUp = async (text: string) => {
      const before = await loggedTimes(text);
      server.process.kill("SIGHUP");
      while ((await loggedTimes(text)) === before) await sleep(20);
    };
    await newToken("ops");
    const server = await spawnServer({ dataDir: join(dir, "data"), args: ["--auth-tokens", tokensFile], logFile });
    try {
      const added = await runCli("", ["tokens", "new", "--name", "ci", "--role", "admin", "--file", tokensFile]);
      expect(added.stderr).to.include("send the server SIGHUP, or restart it, to load it");
      const ci = /^token: (\S+)$/m.exec(added.stdout)![1]!;
      const list = () => runCli(server.address, ["models", "list"], { env: { MODELCACHE_TOKEN: ci } });
      expect((await list()).code, "not yet loaded").to.equal(1);
      await hangUp("reloaded the --auth-tokens file");
      const loaded = await list();
      expect(loaded.code, loaded.stderr).to.equal(0);
      await writeFile(tokensFile, "{ not json");
      await hangUp("the --auth-tokens file was not reloaded");
      expect((await list()).code, "the tokens before stay").to.equal(0);
      expect(await readFile(logFile, "utf8")).to.not.include(ci);
    } finally {
      await server.kill();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("what the CLI loads", () => {
  /** A module hook that fails the CLI as soon as it resolves a module a client command must not need. */
  const SERVER_ONLY = /\/node_modules\/(level|classic-level|piscina|prom-client|undici|pino|pino-pretty|proper-lockfile|cli-progress|read)\/|\/src\/(server\/(start-server|open-runtime|grpc-server|server-settings)|sources\/|pull\/(?!pull-limits)|cache\/|registry\/|lifecycle\/|maintenance\/|store\/|capacity\/|consumers\/|fs\/|grpc\/)/;
  const guard = `data:text/javascript,${encodeURIComponent(`
import { register } from "node:module";
register(${JSON.stringify(
    `data:text/javascript,${encodeURIComponent(`
export async function resolve(specifier, context, next) {
  const found = await next(specifier, context);
  if (${SERVER_ONLY}.test(found.url)) throw new Error("a client command loaded " + found.url);
  return found;
}`)}`,
  )});
`)}`;

  it("loads no server, hub client, worker pool, metrics, LevelDB or progress bars for --help or a client command", async () => {
    const t = await startTestServer();
    try {
      const guarded = (args: string[]) => runCli(t.server.address, args, { env: { NODE_OPTIONS: `--import=${guard}` } });
      const help = await guarded(["--help"]);
      expect(help.code, help.stderr).to.equal(0);
      expect(help.stdout).to.include("Usage: modelcache");
      expect((await guarded(["models", "register", "minilm", "--source", "org/minilm", "--dimensions", "8"])).code).to.equal(0);
      const listed = await guarded(["models", "list", "--json"]);
      expect(listed.code, listed.stderr).to.equal(0);
      expect(listed.stdout).to.include('"name":"minilm"');
      // the guard does fail a command that loads what it names
      const serve = await guarded(["serve", "--listen", "127.0.0.1:0", "--data-dir", t.dataDir]);
      expect(serve.code).to.not.equal(0);
      expect(serve.stderr).to.include("a client command loaded");
    } finally {
      await t.close();
    }
  });
});
