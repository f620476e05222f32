// Crashes between the steps of a change, simulated by doing the first steps
// with the server's own functions and restarting the server on the same
// dirs: startup recovery must finish or undo each by what it was doing.
import { watch } from "node:fs";
import { cp, readFile, readdir, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import { expect } from "chai";
import { CacheStatus, ModelStatus } from "../generated/modelcache/v1/model_cache.js";
import { parkInstall } from "../src/cache/park-install.js";
import { parkForRemoval } from "../src/cache/remove-install.js";
import { spawnServer } from "./support/child-server.js";
import { makeSourceDir, snapshot } from "./support/source-dir.js";
import { FIXTURE_DIR, type TestServer, call, callError, modelSpec, pullOk, startTestServer } from "./support/test-server.js";

describe("startup recovery after a crash between the steps of a change", () => {
  let t: TestServer;
  let installDir: string;
  let before: Record<string, string>;
  beforeEach(async () => {
    t = await startTestServer();
    installDir = join(t.cacheRoot, "minilm");
    await call(t.client, "registerModel", { model: modelSpec() });
    await pullOk(t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
    before = await snapshot(installDir);
  });
  afterEach(() => t.close());

  const purge = () => readdir(join(t.cacheRoot, ".purge"));
  const inspect = () => call(t.client, "inspectCache", { name: "minilm", deep: true });

  it("DropCache parked the install and began deleting it: the delete is finished, the model stays registered", async () => {
    await parkForRemoval(t.server.runtime.layout, "minilm");
    // the crash came while the parked install was half deleted
    const [parked] = await purge();
    await rm(join(t.cacheRoot, ".purge", parked!, "model.safetensors"));
    await t.restart();
    expect(await purge()).to.deep.equal([]);
    expect(await readdir(t.cacheRoot)).to.not.include("minilm");
    expect((await inspect()).status).to.equal(CacheStatus.CACHE_STATUS_MISSING);
    expect((await call(t.client, "getModel", { name: "minilm" })).model!.status).to.equal(ModelStatus.MODEL_STATUS_REGISTERED);
    await pullOk(t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
    expect((await inspect()).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
  });

  it("UnregisterModel had committed but not yet touched the install: the restart finishes it, the model is gone", async () => {
    const record = await t.server.runtime.registry.models.get("minilm");
    await t.server.runtime.registry.models.put("minilm", { ...record!, unregistering: true });
    await t.restart();
    expect(await purge()).to.deep.equal([]);
    expect(await readdir(t.cacheRoot)).to.not.include("minilm");
    expect((await callError(t.client, "getModel", { name: "minilm" })).code).to.equal(status.NOT_FOUND);
    expect((await call(t.client, "listModels", {})).models.map((m) => m.name)).to.not.include("minilm");
    await call(t.client, "registerModel", { model: modelSpec() });
  });

  it("UnregisterModel had committed and parked the install: the restart finishes it, never a registered model without its install", async () => {
    const record = await t.server.runtime.registry.models.get("minilm");
    await t.server.runtime.registry.models.put("minilm", { ...record!, unregistering: true });
    await parkForRemoval(t.server.runtime.layout, "minilm");
    await t.restart();
    expect(await purge()).to.deep.equal([]);
    expect((await callError(t.client, "getModel", { name: "minilm" })).code).to.equal(status.NOT_FOUND);
  });

  it("UnregisterModel deleted the registry record but not the parked install: the model does not come back", async () => {
    await parkForRemoval(t.server.runtime.layout, "minilm");
    await t.server.runtime.registry.models.del("minilm");
    await t.restart();
    expect(await purge()).to.deep.equal([]);
    expect(await readdir(t.cacheRoot)).to.not.include("minilm");
    expect((await callError(t.client, "getModel", { name: "minilm" })).code).to.equal(status.NOT_FOUND);
  });

  it("a promotion parked the old install but had not moved the new one in: the old install is put back whole", async () => {
    await parkInstall(t.server.runtime.layout, "minilm", "swap");
    await t.restart();
    expect(await purge()).to.deep.equal([]);
    expect(await snapshot(installDir)).to.deep.equal(before);
    expect((await inspect()).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
  });

  it("a promotion had moved the new install in: the parked old one is removed and the new one kept", async () => {
    await cp(installDir, join(t.cacheRoot, ".purge", "minilm.0123456789ab.swap"), { recursive: true });
    await writeFile(join(t.cacheRoot, ".purge", "minilm.0123456789ab.swap", "old-only.bin"), "old");
    await t.restart();
    expect(await purge()).to.deep.equal([]);
    expect(await snapshot(installDir)).to.deep.equal(before);
  });

  it("keeps a parked install when moving it back fails for any reason but an install in its place", async () => {
    await parkInstall(t.server.runtime.layout, "minilm", "swap");
    const [parked] = await purge();
    // a file where the install belongs: the move back fails with ENOTDIR, not EEXIST
    await writeFile(installDir, "in the way");
    await t.restart();
    expect(await purge()).to.deep.equal([parked]);
    expect(await snapshot(join(t.cacheRoot, ".purge", parked!))).to.deep.equal(before);
    // once the way is clear, the next start puts it back
    await rm(installDir);
    await t.restart();
    expect(await snapshot(installDir)).to.deep.equal(before);
    expect((await inspect()).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
  });

  it("a forced pull had put its download in the stored copy's place but not moved the new install in: the old install stays whole and the content stays pullable", async () => {
    const manifest = JSON.parse(await readFile(join(installDir, "manifest.json"), "utf8")) as { files: { path: string; sha256: string }[] };
    const weights = manifest.files.find((f) => f.path === "model.safetensors")!;
    const blob = join(t.cacheRoot, ".blobs", "sha256", weights.sha256);
    // the download, hashed and synced, renamed over the stored copy: a new inode under the store's name
    const download = join(t.cacheRoot, ".blobs", "download.tmp");
    await writeFile(download, await readFile(blob), { mode: 0o444 });
    await rename(download, blob);
    await t.restart();
    expect(await snapshot(installDir)).to.deep.equal(before);
    expect((await inspect()).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
    await pullOk(t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
    expect((await snapshot(installDir))["model.safetensors"]).to.equal(before["model.safetensors"]);
    expect((await inspect()).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
    await pullOk(t.client, { name: "minilm", fixtureDir: FIXTURE_DIR, force: true });
    expect((await inspect()).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
  });
});

describe("a server killed while it deletes an install", () => {
  // many files, so that deleting the parked install takes a while and the kill lands in it
  const files: Record<string, string> = {};
  for (let i = 0; i < 400; i++) files[`shard-${String(i).padStart(3, "0")}.bin`] = `bytes of shard ${i}`;

  for (const operation of ["DropCache", "UnregisterModel"] as const) {
    it(`${operation}: after the restart the model has no install, never a half-deleted one, and the registry agrees`, async () => {
      const t = await startTestServer();
      const source = await makeSourceDir(files);
      try {
        await call(t.client, "registerModel", { model: modelSpec() });
        await pullOk(t.client, { name: "minilm", fixtureDir: source.dir });
        await t.server.close();
        const child = await spawnServer({ dataDir: t.dataDir });
        try {
          // killed once the parked install has begun to go
          const parked = new Promise<void>((resolve) => {
            const purge = watch(join(t.cacheRoot, ".purge"), (_event, entry) => {
              if (!entry) return;
              purge.close();
              const deleting = watch(join(t.cacheRoot, ".purge", entry), () => {
                deleting.close();
                resolve();
              });
            });
          });
          const request =
            operation === "DropCache"
              ? new Promise((resolve) => child.client.dropCache({ name: "minilm", force: false }, resolve))
              : new Promise((resolve) => child.client.unregisterModel({ name: "minilm", dropCache: true }, resolve));
          await parked;
          await child.kill();
          await request;
        } finally {
          await child.kill();
        }
        await t.restart();
        expect(await readdir(join(t.cacheRoot, ".purge"))).to.deep.equal([]);
        expect(await readdir(t.cacheRoot)).to.not.include("minilm");
        if (operation === "DropCache") {
          expect((await call(t.client, "getModel", { name: "minilm" })).model!.status).to.equal(ModelStatus.MODEL_STATUS_REGISTERED);
          await pullOk(t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
        } else {
          // the install is parked only after the unregistration committed: the restart finishes it
          expect((await callError(t.client, "getModel", { name: "minilm" })).code).to.equal(status.NOT_FOUND);
        }
      } finally {
        await source.cleanup();
        await t.close();
      }
    });
  }
});
