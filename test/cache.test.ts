import { appendFile, link, mkdir, readFile, readdir, readlink, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import { expect } from "chai";
import { CacheStatus, ModelStatus, UnhealthyReason } from "../generated/modelcache/v1/model_cache.js";
import { makeSourceDir, snapshot } from "./support/source-dir.js";
import { FIXTURE_DIR, type TestServer, call, callError, modelSpec, pullOk, startTestServer } from "./support/test-server.js";

describe("InspectCache and DropCache", () => {
  let t: TestServer;
  let installDir: string;
  beforeEach(async () => {
    t = await startTestServer();
    installDir = join(t.cacheRoot, "minilm");
    await call(t.client, "registerModel", { model: modelSpec() });
  });
  afterEach(() => t.close());

  const inspect = (deep = false) => call(t.client, "inspectCache", { name: "minilm", deep });
  /** The inotify watches this process holds, from /proc: each is a "inotify wd:" line of an inotify descriptor's fdinfo. */
  async function inotifyWatches(): Promise<number> {
    let count = 0;
    for (const fd of await readdir("/proc/self/fd")) {
      const target = await readlink(`/proc/self/fd/${fd}`).catch(() => "");
      if (target === "anon_inode:inotify") count += (await readFile(`/proc/self/fdinfo/${fd}`, "utf8")).split("\n").filter((line) => line.startsWith("inotify wd:")).length;
    }
    return count;
  }
  async function footprint(): Promise<number> {
    let total = 0;
    for (const path of Object.keys(await snapshot(installDir))) total += (await readFile(join(installDir, path))).length;
    return total;
  }

  describe("InspectCache", () => {
    it("is MISSING with a zero footprint before any pull", async () => {
      const report = await inspect();
      expect(report).to.include({ name: "minilm", status: CacheStatus.CACHE_STATUS_MISSING, footprintBytes: 0, detail: "", reason: UnhealthyReason.UNHEALTHY_REASON_UNSPECIFIED });
      expect(report.manifest).to.equal(undefined);
    });

    it("is INSTALLED after a pull, with the manifest and a footprint that counts manifest.json", async () => {
      const events = await pullOk(t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
      const report = await inspect(true);
      expect(report.status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
      expect(report.cacheDir).to.equal(installDir);
      expect(report.manifest).to.deep.equal(events.at(-1)!.completed!.manifest);
      const manifestBytes = (await readFile(join(installDir, "manifest.json"))).length;
      expect(report.footprintBytes).to.equal(report.manifest!.totalSizeBytes + manifestBytes);
      expect(report.footprintBytes).to.equal(await footprint());
    });

    it("is UNHEALTHY / MANIFEST_UNREADABLE when manifest.json is gone", async () => {
      await pullOk(t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
      await rm(join(installDir, "manifest.json"));
      const report = await inspect();
      expect(report).to.include({ status: CacheStatus.CACHE_STATUS_UNHEALTHY, reason: UnhealthyReason.UNHEALTHY_REASON_MANIFEST_UNREADABLE });
      expect(report.detail).to.include("manifest.json");
      expect(report.footprintBytes).to.equal(await footprint());
    });

    it("is UNHEALTHY / MANIFEST_INVALID when manifest.json is corrupted", async () => {
      await pullOk(t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
      await writeFile(join(installDir, "manifest.json"), '{"name": "minilm", "files": [');
      const report = await inspect();
      expect(report).to.include({ status: CacheStatus.CACHE_STATUS_UNHEALTHY, reason: UnhealthyReason.UNHEALTHY_REASON_MANIFEST_INVALID });
      expect(report.detail).to.include("not valid JSON");
      expect(report.manifest).to.equal(undefined);
    });

    it("is UNHEALTHY / MANIFEST_INVALID when manifest.json has the wrong schema, naming the field", async () => {
      await pullOk(t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
      const manifest = JSON.parse(await readFile(join(installDir, "manifest.json"), "utf8"));
      manifest.files[0].size_bytes = "big";
      await writeFile(join(installDir, "manifest.json"), JSON.stringify(manifest));
      const report = await inspect();
      expect(report.reason).to.equal(UnhealthyReason.UNHEALTHY_REASON_MANIFEST_INVALID);
      expect(report.detail).to.include("files[0].size_bytes");
    });

    it("is UNHEALTHY / MANIFEST_INVALID when manifest.json lists a path outside the install", async () => {
      await pullOk(t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
      const manifest = JSON.parse(await readFile(join(installDir, "manifest.json"), "utf8"));
      manifest.files[0].path = "../../registry/LOCK";
      await writeFile(join(installDir, "manifest.json"), JSON.stringify(manifest));
      const report = await inspect(true);
      expect(report.reason).to.equal(UnhealthyReason.UNHEALTHY_REASON_MANIFEST_INVALID);
      expect(report.detail).to.include("'..' part");
    });

    it("is UNHEALTHY / FILE_MISSING naming a deleted artifact", async () => {
      await pullOk(t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
      await rm(join(installDir, "model.safetensors"));
      const report = await inspect();
      expect(report).to.include({ status: CacheStatus.CACHE_STATUS_UNHEALTHY, reason: UnhealthyReason.UNHEALTHY_REASON_FILE_MISSING });
      expect(report.detail).to.include("model.safetensors");
      expect(report.manifest!.files).to.have.length(4);
    });

    it("is UNHEALTHY / SIZE_MISMATCH naming a file whose size changed", async () => {
      await pullOk(t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
      await appendFile(join(installDir, "tokenizer.json"), " ");
      const report = await inspect();
      expect(report.reason).to.equal(UnhealthyReason.UNHEALTHY_REASON_SIZE_MISMATCH);
      expect(report.detail).to.include("tokenizer.json");
    });

    it("finds a changed byte only with deep, as CHECKSUM_MISMATCH naming the file", async () => {
      await pullOk(t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
      const path = join(installDir, "model.safetensors");
      const bytes = await readFile(path);
      bytes[bytes.length - 1] ^= 0xff;
      await writeFile(path, bytes);
      expect((await inspect(false)).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
      const deep = await inspect(true);
      expect(deep).to.include({ status: CacheStatus.CACHE_STATUS_UNHEALTHY, reason: UnhealthyReason.UNHEALTHY_REASON_CHECKSUM_MISMATCH });
      expect(deep.detail).to.include("model.safetensors");
    });

    it("sees every change to an install it inspected before, once its directories have settled", async () => {
      await pullOk(t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
      // directories changed within the last second are read afresh every time; let them settle
      await new Promise((resolve) => setTimeout(resolve, 1100));
      expect((await inspect()).footprintBytes).to.equal(await footprint());
      expect((await inspect()).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
      const pooling = join(installDir, "1_Pooling", "config.json");
      const original = await readFile(pooling);
      await appendFile(pooling, " ");
      const grown = await inspect();
      expect(grown).to.include({ status: CacheStatus.CACHE_STATUS_UNHEALTHY, reason: UnhealthyReason.UNHEALTHY_REASON_SIZE_MISMATCH, footprintBytes: await footprint() });
      await writeFile(join(installDir, "1_Pooling", "extra.bin"), "extra bytes");
      expect((await inspect()).footprintBytes).to.equal(await footprint());
      await writeFile(pooling, original);
      await rm(join(installDir, "tokenizer.json"));
      const gone = await inspect();
      expect(gone).to.include({ reason: UnhealthyReason.UNHEALTHY_REASON_FILE_MISSING, footprintBytes: await footprint() });
      expect(gone.detail).to.include("tokenizer.json");
    });

    it("sees a change made through another path to the same content, and another link to it, right after an answer it gave without looking", async () => {
      await pullOk(t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
      // directories changed within the last second are not watched yet; let them settle
      await new Promise((resolve) => setTimeout(resolve, 1100));
      const first = await inspect();
      // answered from the install's watch: nothing changed
      expect(await inspect()).to.deep.equal(first);
      const tokenizer = first.manifest!.files.find((f) => f.path === "tokenizer.json")!;
      const stored = join(t.cacheRoot, ".blobs", "sha256", tokenizer.sha256);
      // another link to a file of the install: dropping it would free less
      const elsewhere = join(t.cacheRoot, "..", "another-link");
      await link(join(installDir, "model.safetensors"), elsewhere);
      const linked = await inspect();
      const safetensors = Number(first.manifest!.files.find((f) => f.path === "model.safetensors")!.sizeBytes);
      expect(Number(linked.exclusiveBytes)).to.equal(Number(first.exclusiveBytes) - safetensors);
      await rm(elsewhere);
      expect((await inspect()).exclusiveBytes).to.equal(first.exclusiveBytes);
      // the content store's path to the install's tokenizer.json: the same inode
      await appendFile(stored, " ");
      const grown = await inspect();
      expect(grown).to.include({ status: CacheStatus.CACHE_STATUS_UNHEALTHY, reason: UnhealthyReason.UNHEALTHY_REASON_SIZE_MISMATCH });
      expect(grown.detail).to.include("tokenizer.json");
      expect(Number(grown.footprintBytes)).to.equal(Number(first.footprintBytes) + 1);
    });

    it("lets go of an install's watches a second after it was inspected", async () => {
      await pullOk(t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
      await new Promise((resolve) => setTimeout(resolve, 1100));
      const before = await inotifyWatches();
      await inspect();
      // a directory, its subdirectory, and the install's five files
      expect(await inotifyWatches()).to.equal(before + 7);
      await new Promise((resolve) => setTimeout(resolve, 1100));
      expect(await inotifyWatches()).to.equal(before);
    });

    it("re-hashes an install of 20 files with deep without a MaxListenersExceededWarning", async () => {
      const files: Record<string, string> = {};
      for (let i = 0; i < 20; i++) files[`shard-${String(i).padStart(2, "0")}.bin`] = `bytes of shard ${i}\n`.repeat(1000);
      const made = await makeSourceDir(files);
      const warnings: Error[] = [];
      const onWarning = (warning: Error) => warnings.push(warning);
      process.on("warning", onWarning);
      try {
        await pullOk(t.client, { name: "minilm", fixtureDir: made.dir });
        const report = await inspect(true);
        expect(report.status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
        expect(report.manifest!.files).to.have.length(20);
        // warnings are emitted on a later tick
        await new Promise((resolve) => setImmediate(resolve));
        expect(warnings.map((w) => `${w.name}: ${w.message}`)).to.deep.equal([]);
      } finally {
        process.off("warning", onWarning);
        await made.cleanup();
      }
    });

    describe("keeps the registry's status in step with what it finds", () => {
      const modelStatus = async () => (await call(t.client, "getModel", { name: "minilm" })).model!.status;
      const listed = async () => (await call(t.client, "listModels", {})).models.find((m) => m.name === "minilm")!.status;

      it("UNHEALTHY after a shallow inspection finds a file gone, INSTALLED again once one finds it healthy", async () => {
        await pullOk(t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
        const path = join(installDir, "config.json");
        const kept = await readFile(path);
        await rm(path);
        expect(await modelStatus()).to.equal(ModelStatus.MODEL_STATUS_INSTALLED);
        expect((await inspect()).status).to.equal(CacheStatus.CACHE_STATUS_UNHEALTHY);
        expect(await modelStatus()).to.equal(ModelStatus.MODEL_STATUS_UNHEALTHY);
        expect(await listed()).to.equal(ModelStatus.MODEL_STATUS_UNHEALTHY);
        await writeFile(path, kept);
        expect((await inspect()).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
        const model = (await call(t.client, "getModel", { name: "minilm" })).model!;
        expect(model.status).to.equal(ModelStatus.MODEL_STATUS_INSTALLED);
        expect(model.cacheDir).to.equal(installDir);
        expect(model.cacheSizeBytes).to.be.greaterThan(0);
      });

      it("UNHEALTHY after a deep inspection finds a changed byte", async () => {
        await pullOk(t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
        const path = join(installDir, "model.safetensors");
        const bytes = await readFile(path);
        bytes[0] ^= 0xff;
        await writeFile(path, bytes);
        expect((await inspect(true)).status).to.equal(CacheStatus.CACHE_STATUS_UNHEALTHY);
        expect(await modelStatus()).to.equal(ModelStatus.MODEL_STATUS_UNHEALTHY);
      });

      it("REGISTERED after an inspection finds the install gone", async () => {
        await pullOk(t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
        await rm(installDir, { recursive: true });
        expect((await inspect()).status).to.equal(CacheStatus.CACHE_STATUS_MISSING);
        const model = (await call(t.client, "getModel", { name: "minilm" })).model!;
        expect(model.status).to.equal(ModelStatus.MODEL_STATUS_REGISTERED);
        expect(model.cacheDir).to.equal("");
        expect(await listed()).to.equal(ModelStatus.MODEL_STATUS_REGISTERED);
      });
    });

    it("is NOT_FOUND for an unregistered name and INVALID_ARGUMENT for a bad one", async () => {
      expect((await callError(t.client, "inspectCache", { name: "ghost", deep: false })).code).to.equal(status.NOT_FOUND);
      expect((await callError(t.client, "inspectCache", { name: "a.b", deep: false })).code).to.equal(status.INVALID_ARGUMENT);
    });
  });

  describe("DropCache", () => {
    it("removes the artifacts, keeps the registration and reports the freed bytes", async () => {
      await pullOk(t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
      const bytes = await footprint();
      const dropped = await call(t.client, "dropCache", { name: "minilm", force: false });
      expect(dropped).to.deep.equal({ name: "minilm", removed: true, status: ModelStatus.MODEL_STATUS_REGISTERED, freedBytes: bytes });
      expect(await readdir(t.cacheRoot)).to.not.include("minilm");
      expect(await readdir(join(t.cacheRoot, ".purge"))).to.deep.equal([]);
      const { model } = await call(t.client, "getModel", { name: "minilm" });
      expect(model).to.include({ status: ModelStatus.MODEL_STATUS_REGISTERED, cacheDir: "", cacheSizeBytes: 0 });
      expect(model!.installedAt).to.equal(undefined);
      expect((await inspect()).status).to.equal(CacheStatus.CACHE_STATUS_MISSING);
    });

    it("returns removed false when there is nothing to drop", async () => {
      await pullOk(t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
      await call(t.client, "dropCache", { name: "minilm", force: false });
      expect(await call(t.client, "dropCache", { name: "minilm", force: false })).to.deep.equal({ name: "minilm", removed: false, status: ModelStatus.MODEL_STATUS_REGISTERED, freedBytes: 0 });
    });

    it("is NOT_FOUND for an unregistered name", async () => {
      const err = await callError(t.client, "dropCache", { name: "ghost", force: false });
      expect(err.code).to.equal(status.NOT_FOUND);
      expect(err.details).to.equal("local AI model 'ghost' is not registered");
    });

    it("can be pulled again after a drop", async () => {
      await pullOk(t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
      await call(t.client, "dropCache", { name: "minilm", force: false });
      await pullOk(t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
      expect((await inspect(true)).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
    });
  });

  describe("UnregisterModel of an installed model", () => {
    it("is refused without drop_cache, naming drop_cache, and keeps everything", async () => {
      await pullOk(t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
      const before = await snapshot(installDir);
      const err = await callError(t.client, "unregisterModel", { name: "minilm", dropCache: false });
      expect(err.code).to.equal(status.FAILED_PRECONDITION);
      expect(err.details).to.include("drop_cache");
      expect(await snapshot(installDir)).to.deep.equal(before);
      expect((await call(t.client, "getModel", { name: "minilm" })).model!.status).to.equal(ModelStatus.MODEL_STATUS_INSTALLED);
    });

    it("removes the artifacts and the registration with drop_cache", async () => {
      await pullOk(t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
      expect(await call(t.client, "unregisterModel", { name: "minilm", dropCache: true })).to.deep.equal({ removed: true });
      expect(await readdir(t.cacheRoot)).to.not.include("minilm");
      expect((await callError(t.client, "getModel", { name: "minilm" })).code).to.equal(status.NOT_FOUND);
    });

    it("also counts artifacts found on disk that the registry does not know about", async () => {
      await mkdir(installDir, { recursive: true });
      await writeFile(join(installDir, "stray.bin"), "x");
      const err = await callError(t.client, "unregisterModel", { name: "minilm", dropCache: false });
      expect(err.code).to.equal(status.FAILED_PRECONDITION);
    });
  });

  it("keeps an install and its registry entry across a server restart", async () => {
    await pullOk(t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
    const { model } = await call(t.client, "getModel", { name: "minilm" });
    const report = await inspect(true);
    await t.restart();
    expect((await call(t.client, "getModel", { name: "minilm" })).model).to.deep.equal(model);
    expect(await inspect(true)).to.deep.equal(report);
  });
});
