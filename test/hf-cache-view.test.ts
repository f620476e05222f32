// The Hugging Face cache view (--hf-cache-dir): the layout huggingface_hub
// reads offline, checked with @huggingface/hub's own cache functions and a
// resolver following huggingface_hub's documented offline rules.
import { type FSWatcher, readdirSync, statSync, watch } from "node:fs";
import { createHash } from "node:crypto";
import { lstat, mkdir, mkdtemp, open, readFile, readdir, readlink, rm, stat, unlink, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { downloadFileToCacheDir, scanCacheDir } from "@huggingface/hub";
import { expect } from "chai";
import { type ChildServer, spawnServer } from "./support/child-server.js";
import { runCli } from "./support/run-cli.js";
import { parkForRemoval } from "../src/cache/remove-install.js";
import { FakeHub } from "./support/fake-hub.js";
import { makeSourceDir } from "./support/source-dir.js";
import { FIXTURE_DIR, type TestServer, call, modelSpec, pull, pullOk, startTestServer } from "./support/test-server.js";

const REPO = "acme/tiny-minilm";
const FOLDER = "models--acme--tiny-minilm";
const big = Buffer.alloc(64 * 1024, 7);

interface Scene {
  hub: FakeHub;
  t: TestServer;
  view: string;
  close(): Promise<void>;
}

async function scene(extra: Record<string, Buffer | string> = {}, options: { cacheMaxBytes?: number } = {}): Promise<Scene> {
  const hub = await FakeHub.serve(REPO, FIXTURE_DIR, { "onnx/model.onnx": big, ...extra });
  const scratch = await mkdtemp(join(tmpdir(), "modelcache-hfview-"));
  const view = join(scratch, "hf");
  const t = await startTestServer({ hubUrl: hub.url, hfCacheDir: view, ...options });
  return {
    hub,
    t,
    view,
    async close() {
      await t.close();
      await hub.close();
      await rm(scratch, { recursive: true, force: true });
    },
  };
}

/** huggingface_hub's offline rules: a commit names its snapshot; another revision is read from refs/{revision}. */
async function resolveOffline(cacheDir: string, repo: string, revision: string, path: string): Promise<string | undefined> {
  const folder = join(cacheDir, `models--${repo.replace("/", "--")}`);
  let commit = revision;
  if (!/^[0-9a-f]{40}$/.test(revision)) {
    try {
      commit = await readFile(join(folder, "refs", revision), "utf8");
    } catch {
      return undefined;
    }
  }
  const file = join(folder, "snapshots", commit, path);
  try {
    await stat(file);
  } catch {
    return undefined;
  }
  return file;
}

const installedFiles = (hub: FakeHub) => hub.files.filter((f) => !f.path.startsWith("."));

/** A loopback port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
  const { port } = server.address() as { port: number };
  await new Promise<void>((done) => server.close(() => done()));
  return port;
}

async function storeBlobs(t: TestServer): Promise<string[]> {
  return (await readdir(join(t.cacheRoot, ".blobs", "sha256"))).sort();
}

describe("Hugging Face cache view", function () {
  this.timeout(60_000);
  let s: Scene | undefined;
  afterEach(async () => {
    await s?.close();
    s = undefined;
  });

  it("lays out a hub install as huggingface_hub reads it offline, in place when the pull answers", async () => {
    s = await scene();
    await call(s.t.client, "registerModel", { model: modelSpec({ source: REPO, revision: "main" }) });
    await pullOk(s.t.client, { name: "minilm" });
    const folder = join(s.view, FOLDER);
    expect(await readFile(join(folder, "refs", "main"), "utf8")).to.equal(s.hub.commit);
    for (const file of installedFiles(s.hub)) {
      const blob = await lstat(join(folder, "blobs", file.sha256));
      const installed = await lstat(join(s.t.cacheRoot, "minilm", file.path));
      expect(blob.ino, file.path).to.equal(installed.ino);
      expect(blob.mode & 0o777).to.equal(0o444);
      const link = join(folder, "snapshots", s.hub.commit, file.path);
      expect(await readlink(link)).to.equal(`${"../".repeat(file.path.split("/").length + 1)}blobs/${file.sha256}`);
      expect(await readFile(link)).to.deep.equal(file.bytes);
      expect(await resolveOffline(s.view, REPO, "main", file.path)).to.equal(link);
    }

    const scan = await scanCacheDir(s.view);
    expect(scan.warnings).to.deep.equal([]);
    const repo = scan.repos.find((r) => r.id.name === REPO)!;
    expect(repo, "the repo is found").to.not.equal(undefined);
    expect(repo.revisions.map((r) => r.commitOid)).to.deep.equal([s.hub.commit]);
    expect(repo.revisions[0]!.refs).to.deep.equal(["main"]);
    // its scan lists the files at the top of a snapshot (it does not descend into subdirectories)
    const topLevel = installedFiles(s.hub).filter((f) => !f.path.includes("/"));
    expect(repo.revisions[0]!.files.map((f) => f.path.slice(f.path.indexOf(s!.hub.commit) + 41)).sort()).to.deep.equal(topLevel.map((f) => f.path).sort());
    for (const file of repo.revisions[0]!.files) expect(file.blob.path).to.match(new RegExp(`/${FOLDER}/blobs/[0-9a-f]{64}$`));

    const hubUrl = `http://127.0.0.1:${await closedPort()}`;
    const path = await downloadFileToCacheDir({ repo: REPO, path: "onnx/model.onnx", revision: s.hub.commit, hubUrl, cacheDir: s.view });
    expect(path).to.equal(await resolveOffline(s.view, REPO, "main", "onnx/model.onnx"));
    expect(await readFile(path)).to.deep.equal(big);
  });

  it("does not count the view's links as references: DropCache frees the content and the view goes first", async () => {
    s = await scene();
    await call(s.t.client, "registerModel", { model: modelSpec({ source: REPO, revision: "main" }) });
    await pullOk(s.t.client, { name: "minilm" });
    const inspected = await call(s.t.client, "inspectCache", { name: "minilm", deep: false });
    // nothing else shares its content: every byte is its own, the view's links notwithstanding
    expect(inspected.exclusiveBytes).to.equal(inspected.footprintBytes);
    const described = await call(s.t.client, "describeCache", {});
    expect(described.models.find((m) => m.name === "minilm")?.exclusiveBytes).to.equal(inspected.footprintBytes);
    // a reader holding a file open keeps reading it; a new open fails
    const path = (await resolveOffline(s.view, REPO, "main", "onnx/model.onnx"))!;
    const reading = await open(path);
    const dropped = await call(s.t.client, "dropCache", { name: "minilm", force: false });
    try {
      expect((await reading.readFile()).equals(big)).to.equal(true);
    } finally {
      await reading.close();
    }
    expect(await resolveOffline(s.view, REPO, "main", "onnx/model.onnx")).to.equal(undefined);
    expect(dropped.freedBytes).to.equal(inspected.exclusiveBytes);
    expect(await storeBlobs(s.t)).to.deep.equal([]);
    expect(await readdir(s.view)).to.deep.equal([]);
  });

  it("evicts a hub install whose view links its content: the view goes and the content is freed", async () => {
    s = await scene({}, { cacheMaxBytes: 150_000 });
    await call(s.t.client, "registerModel", { model: modelSpec({ name: "hub", source: REPO, revision: "main" }) });
    await pullOk(s.t.client, { name: "hub" });
    const hubBlobs = await storeBlobs(s.t);
    const source = await makeSourceDir({ "weights.bin": Buffer.alloc(100_000, 3) });
    try {
      await call(s.t.client, "registerModel", { model: modelSpec({ name: "local" }) });
      const events = await pullOk(s.t.client, { name: "local", fixtureDir: source.dir });
      expect(events.find((e) => e.started)?.started?.evictedModels).to.deep.equal(["hub"]);
      expect(await readdir(s.view)).to.deep.equal([]);
      expect(await storeBlobs(s.t)).to.not.include.members(hubBlobs);
    } finally {
      await source.cleanup();
    }
  });

  it("shares models--org--name/ between two models of one source, and removes each install's part in order", async () => {
    s = await scene();
    await call(s.t.client, "registerModel", { model: modelSpec({ name: "main", source: REPO, revision: "main" }) });
    await call(s.t.client, "registerModel", { model: modelSpec({ name: "pinned", source: REPO, revision: s.hub.commit }) });
    await pullOk(s.t.client, { name: "main" });
    await pullOk(s.t.client, { name: "pinned" });
    const old = s.hub.commit;
    const folder = join(s.view, FOLDER);
    expect(await readdir(join(folder, "refs"))).to.deep.equal(["main"]);
    // replacement by a new commit: the ref moves, both snapshots stay (the pinned model holds the old one)
    const changed = s.hub.commitFile("extra.txt", "new in this commit");
    await pullOk(s.t.client, { name: "main" });
    expect(await readFile(join(folder, "refs", "main"), "utf8")).to.equal(changed);
    expect((await readdir(join(folder, "snapshots"))).sort()).to.deep.equal([old, changed].sort());
    expect(await readFile(join(folder, "snapshots", changed, "extra.txt"), "utf8")).to.equal("new in this commit");
    await expectNoDanglingFile(folder);
    // UnregisterModel with drop_cache: the ref goes, the old snapshot stays, the new commit's only blob goes
    await call(s.t.client, "unregisterModel", { name: "main", dropCache: true });
    expect(await readdir(join(folder, "refs"))).to.deep.equal([]);
    expect(await readdir(join(folder, "snapshots"))).to.deep.equal([old]);
    expect(await readdir(join(folder, "blobs"))).to.not.include(s.hub.file("extra.txt").sha256);
    await expectNoDanglingFile(folder);
    await call(s.t.client, "dropCache", { name: "pinned", force: false });
    expect(await readdir(s.view)).to.deep.equal([]);
    expect(await storeBlobs(s.t)).to.deep.equal([]);
  });

  it("gives two installs of one commit with different include filters one snapshot holding the union of their files", async () => {
    s = await scene();
    await call(s.t.client, "registerModel", { model: modelSpec({ name: "configs", source: REPO, revision: "main", include: ["*.json"] }) });
    await call(s.t.client, "registerModel", { model: modelSpec({ name: "onnx", source: REPO, revision: s.hub.commit, include: ["onnx/*"] }) });
    await pullOk(s.t.client, { name: "configs" });
    await pullOk(s.t.client, { name: "onnx" });
    const snapshot = join(s.view, FOLDER, "snapshots", s.hub.commit);
    const listing = async () => (await listFiles(snapshot)).sort();
    expect(await listing()).to.deep.equal(["1_Pooling/config.json", "config.json", "onnx/model.onnx", "tokenizer.json"]);
    await call(s.t.client, "dropCache", { name: "configs", force: false });
    expect(await readdir(join(s.view, FOLDER, "refs"))).to.deep.equal([]);
    expect(await listing()).to.deep.equal(["onnx/model.onnx"]);
    expect(await readdir(join(s.view, FOLDER, "blobs"))).to.deep.equal([s.hub.file("onnx/model.onnx").sha256]);
  });

  it("reconciles at start: builds what is missing, repairs what was changed, removes what no install backs", async () => {
    s = await scene();
    await call(s.t.client, "registerModel", { model: modelSpec({ source: REPO, revision: "main" }) });
    await pullOk(s.t.client, { name: "minilm" });
    const folder = join(s.view, FOLDER);
    const file = installedFiles(s.hub)[0]!;
    await unlink(join(folder, "snapshots", s.hub.commit, file.path));
    await unlink(join(folder, "refs", "main"));
    await mkdir(join(s.view, "models--nobody--here", "snapshots", "x"), { recursive: true });
    await writeFile(join(folder, "blobs", "f".repeat(64)), "stray");
    await s.t.restart();
    expect(await readdir(s.view)).to.deep.equal([FOLDER]);
    expect(await readFile(join(folder, "refs", "main"), "utf8")).to.equal(s.hub.commit);
    expect(await readFile(join(folder, "snapshots", s.hub.commit, file.path))).to.deep.equal(file.bytes);
    expect((await readdir(join(folder, "blobs"))).sort()).to.deep.equal([...new Set(installedFiles(s.hub).map((f) => f.sha256))].sort());
    await call(s.t.client, "dropCache", { name: "minilm", force: false });
    await s.t.restart();
    expect(await readdir(s.view)).to.deep.equal([]);
  });

  for (const crash of ["UnregisterModel had committed", "DropCache had parked the install"] as const) {
    it(`${crash} when the server stopped: the restart removes the view, and PruneCache the content it left`, async () => {
      s = await scene();
      await call(s.t.client, "registerModel", { model: modelSpec({ source: REPO, revision: "main" }) });
      await pullOk(s.t.client, { name: "minilm" });
      const runtime = s.t.server.runtime;
      if (crash === "UnregisterModel had committed") {
        const record = await runtime.registry.models.get("minilm");
        await runtime.registry.models.put("minilm", { ...record!, unregistering: true });
      } else {
        await parkForRemoval(runtime.layout, "minilm");
      }
      await s.t.restart();
      expect(await readdir(s.view)).to.deep.equal([]);
      // recovery leaves the content to PruneCache: the view's links do not keep it
      await call(s.t.client, "pruneCache", { dryRun: false });
      expect(await storeBlobs(s.t)).to.deep.equal([]);
    });
  }

  it("never shows a reader a ref to a snapshot missing a file while a model with many files is dropped", async () => {
    const many: Record<string, string> = {};
    for (let i = 0; i < 200; i++) many[`shards/part-${String(i).padStart(3, "0")}.txt`] = `shard ${i}`;
    s = await scene(many);
    await call(s.t.client, "registerModel", { model: modelSpec({ source: REPO, revision: "main" }) });
    await pullOk(s.t.client, { name: "minilm" });
    const paths = installedFiles(s.hub).map((f) => f.path);
    let answered = false;
    let resolutions = 0;
    const reader = (async () => {
      while (!answered) {
        for (const path of paths) {
          const ref = await readFile(join(s!.view, FOLDER, "refs", "main"), "utf8").catch(() => undefined);
          if (ref === undefined) continue;
          // a ref was read: its snapshot must hold every file
          expect(await resolveOffline(s!.view, REPO, ref, path), `${path} of ${ref}`).to.not.equal(undefined);
          resolutions += 1;
        }
        await new Promise((next) => setImmediate(next));
      }
    })();
    await call(s.t.client, "dropCache", { name: "minilm", force: false });
    answered = true;
    await reader;
    expect(resolutions).to.be.greaterThan(0);
    expect(await readdir(s.view)).to.deep.equal([]);
  });

  it("refuses to start when the view's dir is on another filesystem than the cache root, naming both", async function () {
    const dataDir = await mkdtemp(join(tmpdir(), "modelcache-hfview-"));
    const other = await mkdtemp("/dev/shm/modelcache-hfview-").catch(() => undefined);
    try {
      if (!other || (await stat(other)).dev === (await stat(dataDir)).dev) this.skip();
      // the real binary, given the dir by its environment variable: it exits 2 as for a bad flag
      const run = await runCli("127.0.0.1:1", ["serve", "--listen", "127.0.0.1:0", "--data-dir", dataDir, "--offline"], { env: { MODELCACHE_HF_CACHE_DIR: other } });
      expect(run.code).to.equal(2);
      expect(run.stdout + run.stderr).to.include(other).and.to.include(join(dataDir, "ai_models_cache")).and.to.include("another filesystem");
    } finally {
      await rm(dataDir, { recursive: true, force: true });
      if (other) await rm(other, { recursive: true, force: true });
    }
  });
});

/** Every ref names a snapshot whose every link resolves. */
async function expectNoDanglingFile(folder: string): Promise<void> {
  for (const ref of await readdir(join(folder, "refs"))) {
    const commit = await readFile(join(folder, "refs", ref), "utf8");
    await stat(join(folder, "snapshots", commit));
  }
  const walk = async (dir: string): Promise<void> => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      if (entry.isDirectory()) await walk(join(dir, entry.name));
      else await stat(join(dir, entry.name));
    }
  };
  await walk(join(folder, "snapshots"));
}

/** The view holds exactly the install of "minilm" (REPO at main) when it is on disk, and nothing otherwise. */
async function expectViewMatchesInstall(t: TestServer, view: string): Promise<void> {
  const manifestText = await readFile(join(t.cacheRoot, "minilm", "manifest.json"), "utf8").catch(() => undefined);
  if (manifestText === undefined) {
    expect(await readdir(view)).to.deep.equal([]);
    return;
  }
  const manifest = JSON.parse(manifestText) as { resolved_commit: string; files: { path: string; sha256: string }[] };
  const folder = join(view, FOLDER);
  expect(await readdir(view)).to.deep.equal([FOLDER]);
  expect(await readFile(join(folder, "refs", "main"), "utf8")).to.equal(manifest.resolved_commit);
  expect(await readdir(join(folder, "snapshots"))).to.deep.equal([manifest.resolved_commit]);
  expect((await readdir(join(folder, "blobs"))).sort()).to.deep.equal([...new Set(manifest.files.map((f) => f.sha256))].sort());
  for (const file of manifest.files) {
    const resolved = await resolveOffline(view, REPO, "main", file.path);
    expect(resolved, file.path).to.not.equal(undefined);
    expect(createHash("sha256").update(await readFile(resolved!)).digest("hex")).to.equal(file.sha256);
  }
  await expectNoDanglingFile(folder);
}

/**
 * Hands the scene's data dir to a child server, starts `operation` on it and
 * kills the server after `changes` changes in the view; then restarts the
 * in-process server and checks the view against the install.
 */
async function killedAfterChanges(s: Scene, changes: number, operation: (child: ChildServer) => Promise<unknown>): Promise<void> {
  await s.t.server.close();
  const child = await spawnServer({ dataDir: s.t.dataDir, args: ["--hub-url", s.hub.url, "--hf-cache-dir", s.view] });
  try {
    const done = operation(child);
    await afterChanges(s.view, changes, done);
    await child.kill();
    await done;
  } finally {
    await child.kill();
  }
  await s.t.restart();
  await expectViewMatchesInstall(s.t, s.view);
}

/**
 * Resolves at the `count`-th change under `dir`, or when `done` settles,
 * whichever comes first; every watcher is closed either way. Each directory
 * is watched on its own (a directory that appears gets its watcher when its
 * parent reports it): Node 20's recursive watch throws when a watched
 * directory goes. A change missed in a race only moves the kill.
 */
function afterChanges(dir: string, count: number, done: Promise<unknown>): Promise<void> {
  const watchers: FSWatcher[] = [];
  let seen = 0;
  return new Promise<void>((resolve) => {
    const finish = () => {
      for (const w of watchers) w.close();
      resolve();
    };
    const follow = (at: string) => {
      let watcher: FSWatcher;
      try {
        watcher = watch(at, (_event, name) => {
          if (++seen >= count) finish();
          else if (name) {
            const child = join(at, name.toString());
            if (statSync(child, { throwIfNoEntry: false })?.isDirectory() && !watched.has(child)) follow(child);
          }
        });
      } catch {
        // gone before it could be watched: nothing more happens in it
        return;
      }
      // a watched directory removed ends its watcher; that is no failure of the test
      watcher.on("error", () => watcher.close());
      watched.add(at);
      watchers.push(watcher);
      for (const entry of readdirSync(at, { withFileTypes: true })) if (entry.isDirectory()) follow(join(at, entry.name));
    };
    const watched = new Set<string>();
    follow(dir);
    void done.finally(finish);
  });
}

describe("a server killed while it builds or removes a cache view", function () {
  this.timeout(120_000);
  // many files, so that the view's steps take long enough for kills to land at different points of them
  const many: Record<string, string> = {};
  for (let i = 0; i < 150; i++) many[`shards/part-${String(i).padStart(3, "0")}.txt`] = `shard ${i}`;

  for (const changes of [1, 30, 200, 400]) {
    it(`building (killed after ${changes} changes in the view): after the restart the view is the install's, or nothing`, async () => {
      const s = await scene(many);
      try {
        await call(s.t.client, "registerModel", { model: modelSpec({ source: REPO, revision: "main" }) });
        await killedAfterChanges(s, changes, (child) => pull(child.client, { name: "minilm" }));
      } finally {
        await s.close();
      }
    });

    for (const operation of ["DropCache", "UnregisterModel"] as const) {
      it(`removing by ${operation} (killed after ${changes} changes in the view): after the restart the view is the install's, or nothing`, async () => {
        const s = await scene(many);
        try {
          await call(s.t.client, "registerModel", { model: modelSpec({ source: REPO, revision: "main" }) });
          await pullOk(s.t.client, { name: "minilm" });
          await killedAfterChanges(s, changes, (child) =>
            operation === "DropCache"
              ? new Promise((resolve) => child.client.dropCache({ name: "minilm", force: false }, resolve))
              : new Promise((resolve) => child.client.unregisterModel({ name: "minilm", dropCache: true }, resolve)),
          );
        } finally {
          await s.close();
        }
      });
    }
  }
});

/** Every non-directory below `dir`, as '/'-separated paths. */
async function listFiles(dir: string, prefix = ""): Promise<string[]> {
  const found: string[] = [];
  for (const entry of await readdir(join(dir, prefix), { withFileTypes: true })) {
    const path = prefix === "" ? entry.name : `${prefix}/${entry.name}`;
    if (entry.isDirectory()) found.push(...(await listFiles(dir, path)));
    else found.push(path);
  }
  return found;
}
