import { lstat, mkdir, readFile, readdir, rm, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Metadata, status } from "@grpc/grpc-js";
import { expect } from "chai";
import { CacheStatus, ModelStatus, UnhealthyReason } from "../generated/modelcache/v1/model_cache.js";
import { HASH_BEHIND_FROM_BYTES } from "../src/cache/file-copier.js";
import { patternedBytes, sha256, snapshot } from "./support/source-dir.js";
import { FIXTURE_DIR, call, kindOf, modelSpec, pull, pullOk, serverWithModel } from "./support/test-server.js";

describe("Pull", () => {
  const suite = serverWithModel();
  const source = suite.source;

  it("streams started first, then per file started / completed (files announced in path order), then completed", async () => {
    const events = await pullOk(suite.t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
    const kinds = events.map(kindOf);
    expect(kinds[0]).to.equal("started");
    expect(kinds.at(-1)).to.equal("completed");
    expect(kinds.filter((k) => k === "started" || k === "completed")).to.have.length(2);
    const files = ["1_Pooling/config.json", "config.json", "model.safetensors", "tokenizer.json"];
    expect(events.filter((e) => e.fileStarted).map((e) => e.fileStarted!.path)).to.deep.equal(files);
    for (const path of files) {
      const ofFile = events.map((e, i) => ({ i, kind: kindOf(e), path: e.fileStarted?.path ?? e.fileProgress?.path ?? e.fileCompleted?.path })).filter((e) => e.path === path);
      expect(ofFile[0]!.kind, path).to.equal("fileStarted");
      expect(ofFile.at(-1)!.kind, path).to.equal("fileCompleted");
      expect(ofFile.filter((e) => e.kind === "fileCompleted"), path).to.have.length(1);
    }
    expect(events.every((e) => e.name === "minilm")).to.equal(true);
    const sizes = await Promise.all(files.map(async (f) => (await lstat(join(FIXTURE_DIR, f))).size));
    expect(events[0]!.started).to.deep.equal({
      source: `dir:${FIXTURE_DIR}`,
      fileCount: 4,
      totalBytes: sizes.reduce((a, b) => a + b, 0),
      // a directory's files are read before the store can know them: reuse is told per file
      reusedBytes: 0,
      evictedModels: [],
    });
    expect(events.filter((e) => e.fileStarted).map((e) => e.fileStarted!.index)).to.deep.equal([0, 1, 2, 3]);
  });

  it("reports each file's sha256, equal to the source file's, in file_completed and in manifest.json", async () => {
    const events = await pullOk(suite.t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
    const completed = events.at(-1)!.completed!;
    expect(completed.status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
    expect(completed.cacheDir).to.equal(join(suite.t.cacheRoot, "minilm"));
    const onDisk = JSON.parse(await readFile(join(suite.t.cacheRoot, "minilm", "manifest.json"), "utf8"));
    for (const event of events.filter((e) => e.fileCompleted)) {
      const { path, sha256: digest, sizeBytes } = event.fileCompleted!;
      const bytes = await readFile(join(FIXTURE_DIR, path));
      expect(digest).to.equal(sha256(bytes));
      expect(sizeBytes).to.equal(bytes.length);
      expect(onDisk.files.find((f: { path: string }) => f.path === path)).to.deep.equal({ path, sha256: digest, size_bytes: bytes.length });
      expect(sha256(await readFile(join(suite.t.cacheRoot, "minilm", path)))).to.equal(digest);
    }
    expect(onDisk).to.include({ name: "minilm", source: "sentence-transformers/all-MiniLM-L6-v2", revision: "main", task: "embedding", engine: "candle", dimensions: 384 });
    expect(onDisk.total_size_bytes).to.equal(completed.manifest!.totalSizeBytes);
    expect(onDisk.installed_at_unix_ms).to.equal(completed.manifest!.installedAt!.getTime());
    expect(completed.manifest!.files.map((f) => f.path)).to.deep.equal(onDisk.files.map((f: { path: string }) => f.path));
  });

  it("installs a file large enough to be hashed behind its copy with its sha256 in file_completed and manifest.json, equal to the installed bytes'", async () => {
    const big = patternedBytes(HASH_BEHIND_FROM_BYTES + 4097);
    const dir = await source({ "config.json": "{}", "model.safetensors": big });
    const events = await pullOk(suite.t.client, { name: "minilm", fixtureDir: dir });
    const completed = events.find((e) => e.fileCompleted?.path === "model.safetensors")!.fileCompleted!;
    expect(completed).to.include({ sha256: sha256(big), sizeBytes: big.length });
    const onDisk = JSON.parse(await readFile(join(suite.t.cacheRoot, "minilm", "manifest.json"), "utf8"));
    expect(onDisk.files.find((f: { path: string }) => f.path === "model.safetensors")).to.deep.equal({ path: "model.safetensors", sha256: sha256(big), size_bytes: big.length });
    expect(sha256(await readFile(join(suite.t.cacheRoot, "minilm", "model.safetensors")))).to.equal(sha256(big));
    expect(suite.t.server.runtime.copier.copied.hashedBehind).to.equal(1);
  });

  it("marks the model INSTALLED with cache_dir, installed_at and cache_size_bytes", async () => {
    const events = await pullOk(suite.t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
    const manifest = events.at(-1)!.completed!.manifest!;
    const { model } = await call(suite.t.client, "getModel", { name: "minilm" });
    expect(model).to.include({ status: ModelStatus.MODEL_STATUS_INSTALLED, cacheDir: join(suite.t.cacheRoot, "minilm"), cacheSizeBytes: manifest.totalSizeBytes });
    expect(model!.installedAt!.getTime()).to.equal(manifest.installedAt!.getTime());
  });

  it("skips names starting with '.', any manifest.json and symbolic links", async () => {
    const dir = await source({ "a.json": "{}", ".git/config": "x", ".hidden": "x", "manifest.json": "{}", "sub/manifest.json": "{}", "sub/b.bin": "bb" });
    await symlink(join(FIXTURE_DIR, "config.json"), join(dir, "linked.json"));
    const events = await pullOk(suite.t.client, { name: "minilm", fixtureDir: dir });
    expect(events.at(-1)!.completed!.manifest!.files.map((f) => f.path)).to.deep.equal(["a.json", "sub/b.bin"]);
    const installed = await readdir(join(suite.t.cacheRoot, "minilm"), { recursive: true });
    expect(installed.sort()).to.deep.equal(["a.json", "manifest.json", "sub", "sub/b.bin"]);
  });

  it("applies the model's include and exclude filters to a local directory too", async () => {
    await call(suite.t.client, "updateModel", { name: "minilm", model: modelSpec({ include: ["*.json"], exclude: ["1_Pooling/"] }) });
    const events = await pullOk(suite.t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
    expect(events.at(-1)!.completed!.manifest!.files.map((f) => f.path)).to.deep.equal(["config.json", "tokenizer.json"]);
  });

  it("uses the server's --fixture-dir when the request names none", async () => {
    await suite.t.restart({ fixtureDir: FIXTURE_DIR });
    const events = await pullOk(suite.t.client, { name: "minilm" });
    expect(events[0]!.started!.source).to.equal(`dir:${FIXTURE_DIR}`);
    expect(events.at(-1)!.completed!.manifest!.files).to.have.length(4);
  });

  it("sends throttled file_progress events whose counters grow to the file's size", async () => {
    await suite.t.restart({ progressIntervalMs: 0 });
    const big = Buffer.alloc(13 * 1024 * 1024 + 17, 7);
    const dir = await source({ "big.bin": big, "small.json": "{}" });
    const events = await pullOk(suite.t.client, { name: "minilm", fixtureDir: dir });
    const progress = events.filter((e) => e.fileProgress).map((e) => e.fileProgress!);
    expect(progress.length).to.be.at.least(2);
    for (const p of progress) {
      expect(p.path).to.equal("big.bin");
      expect(p.sizeBytes).to.equal(big.length);
      expect(p.totalBytes).to.equal(big.length + 2);
      expect(p.bytesDone).to.be.below(big.length);
    }
    const done = progress.map((p) => p.bytesDone);
    expect(done).to.deep.equal([...done].sort((a, b) => a - b));
    const ofBig = events.filter((e) => (e.fileStarted ?? e.fileProgress ?? e.fileCompleted)?.path === "big.bin").map(kindOf);
    expect(ofBig[0]).to.equal("fileStarted");
    expect(ofBig.at(-1)).to.equal("fileCompleted");
  });

  it("replaces the previous file set completely on a re-pull", async () => {
    const first = await source({ "a.json": "1", "old.bin": "old", "keep/x.txt": "x1" });
    await pullOk(suite.t.client, { name: "minilm", fixtureDir: first });
    const second = await source({ "a.json": "2", "keep/x.txt": "x2", "new.bin": "new" });
    await pullOk(suite.t.client, { name: "minilm", fixtureDir: second });
    const installed = await snapshot(join(suite.t.cacheRoot, "minilm"));
    expect(Object.keys(installed).sort()).to.deep.equal(["a.json", "keep/x.txt", "manifest.json", "new.bin"]);
    expect(installed["a.json"]).to.equal(sha256("2"));
    expect(installed["keep/x.txt"]).to.equal(sha256("x2"));
    expect(await readdir(join(suite.t.cacheRoot, ".staging"))).to.deep.equal([]);
    expect(await readdir(join(suite.t.cacheRoot, ".purge"))).to.deep.equal([]);
  });

  describe("re-pulling an unchanged source", () => {
    const ino = async (path: string) => (await lstat(join(suite.t.cacheRoot, "minilm", path))).ino;

    it("reuses each file proven identical to the install's copy, and rewrites the changed ones", async () => {
      const dir = await source({ "same.bin": Buffer.alloc(1024 * 1024, 1), "changed.json": "v1" });
      await pullOk(suite.t.client, { name: "minilm", fixtureDir: dir });
      const [same, changed] = [await ino("same.bin"), await ino("changed.json")];
      await writeFile(join(dir, "changed.json"), "v2");
      const events = await pullOk(suite.t.client, { name: "minilm", fixtureDir: dir });
      expect(await ino("same.bin")).to.equal(same);
      expect(await ino("changed.json")).to.not.equal(changed);
      expect(await readFile(join(suite.t.cacheRoot, "minilm", "changed.json"), "utf8")).to.equal("v2");
      expect(events.filter((e) => e.fileCompleted).map((e) => e.fileCompleted!.sha256).sort()).to.deep.equal(
        [sha256(Buffer.alloc(1024 * 1024, 1)), sha256("v2")].sort(),
      );
      expect((await call(suite.t.client, "inspectCache", { name: "minilm", deep: true })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
    });

    it("with force re-reads every source file and re-hashes the stored content before linking it", async () => {
      await pullOk(suite.t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
      const before = await ino("model.safetensors");
      const events = await pullOk(suite.t.client, { name: "minilm", fixtureDir: FIXTURE_DIR, force: true });
      // intact stored content is the same content: linked again, not copied
      expect(await ino("model.safetensors")).to.equal(before);
      expect(events.filter((e) => e.fileCompleted).every((e) => e.fileCompleted!.reused)).to.equal(true);
      expect((await call(suite.t.client, "inspectCache", { name: "minilm", deep: true })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
    });

    it("repairs an install that lost a file with a plain Pull, reusing the files still there", async () => {
      await pullOk(suite.t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
      const kept = await ino("tokenizer.json");
      await rm(join(suite.t.cacheRoot, "minilm", "model.safetensors"));
      expect((await call(suite.t.client, "inspectCache", { name: "minilm", deep: false })).reason).to.equal(UnhealthyReason.UNHEALTHY_REASON_FILE_MISSING);
      await pullOk(suite.t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
      expect((await call(suite.t.client, "inspectCache", { name: "minilm", deep: true })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
      expect(await ino("tokenizer.json")).to.equal(kept);
    });

    it("repairs an install whose file became a directory", async () => {
      await pullOk(suite.t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
      await rm(join(suite.t.cacheRoot, "minilm", "config.json"));
      await mkdir(join(suite.t.cacheRoot, "minilm", "config.json"));
      await pullOk(suite.t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
      expect((await call(suite.t.client, "inspectCache", { name: "minilm", deep: true })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
    });

    it("repairs an installed file whose bytes rotted, even when its size did not change", async () => {
      await pullOk(suite.t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
      const path = join(suite.t.cacheRoot, "minilm", "model.safetensors");
      const bytes = await readFile(path);
      bytes[100] ^= 0xff;
      await writeFile(path, bytes);
      expect((await call(suite.t.client, "inspectCache", { name: "minilm", deep: true })).reason).to.equal(UnhealthyReason.UNHEALTHY_REASON_CHECKSUM_MISMATCH);
      await pullOk(suite.t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
      expect((await call(suite.t.client, "inspectCache", { name: "minilm", deep: true })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
      expect(sha256(await readFile(path))).to.equal(sha256(await readFile(join(FIXTURE_DIR, "model.safetensors"))));
    });
  });

  it("leaves the previous install byte-identical when a re-pull fails midway", async () => {
    await suite.t.restart({ fileConcurrency: 1 });
    await pullOk(suite.t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
    const before = await snapshot(join(suite.t.cacheRoot, "minilm"));
    const { model: modelBefore } = await call(suite.t.client, "getModel", { name: "minilm" });
    // a.bin is large enough that the pull is still copying it when z.bin disappears
    const dir = await source({ "a.bin": Buffer.alloc(48 * 1024 * 1024, 1), "z.bin": "gone soon" });
    const outcome = await pull(suite.t.client, { name: "minilm", fixtureDir: dir }, {
      onEvent: (event) => {
        if (event.fileStarted?.path === "a.bin") void rm(join(dir, "z.bin"));
      },
    });
    expect(outcome.error?.code).to.equal(status.INTERNAL);
    expect(outcome.error?.details).to.include("z.bin");
    expect(outcome.events.map(kindOf)).to.not.include("completed");
    expect(await snapshot(join(suite.t.cacheRoot, "minilm"))).to.deep.equal(before);
    expect(await readdir(join(suite.t.cacheRoot, ".staging"))).to.deep.equal([]);
    const { model } = await call(suite.t.client, "getModel", { name: "minilm" });
    expect(model).to.deep.equal(modelBefore);
  });

  it("removes the staging dir and keeps the previous install when the client cancels", async () => {
    await pullOk(suite.t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
    const before = await snapshot(join(suite.t.cacheRoot, "minilm"));
    const dir = await source({ "a.bin": Buffer.alloc(64 * 1024 * 1024, 2), "b.bin": "b" });
    const outcome = await pull(suite.t.client, { name: "minilm", fixtureDir: dir }, {
      onEvent: (event, stream) => {
        if (event.fileStarted) stream.cancel();
      },
    });
    expect(outcome.error?.code).to.equal(status.CANCELLED);
    // the server finishes its cleanup once the install lock is free again
    await suite.t.server.runtime.pulls.find("minilm")?.done;
    expect(await readdir(join(suite.t.cacheRoot, ".staging"))).to.deep.equal([]);
    expect(await snapshot(join(suite.t.cacheRoot, "minilm"))).to.deep.equal(before);
  });

  it("pulls different models in parallel and the same model one at a time", async () => {
    await call(suite.t.client, "registerModel", { model: modelSpec({ name: "second" }) });
    const [a, b, c] = await Promise.all([
      pull(suite.t.client, { name: "minilm", fixtureDir: FIXTURE_DIR }),
      pull(suite.t.client, { name: "second", fixtureDir: FIXTURE_DIR }),
      pull(suite.t.client, { name: "minilm", fixtureDir: FIXTURE_DIR }),
    ]);
    for (const outcome of [a, b, c]) {
      expect(outcome.error).to.equal(undefined);
      expect(outcome.events.at(-1)!.completed!.status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
    }
    const inspected = await call(suite.t.client, "inspectCache", { name: "minilm", deep: true });
    expect(inspected.status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
  });

  describe("refusals, in the contract's order", () => {
    it("refuses plaintext credential metadata first, even for an invalid name", async () => {
      const metadata = new Metadata();
      metadata.set("hf-token", "hf_abc");
      const outcome = await pull(suite.t.client, { name: "bad name!" }, { metadata });
      expect(outcome.error?.code).to.equal(status.INVALID_ARGUMENT);
      expect(outcome.error?.details).to.include("PutSecret").and.include("credential_alias");
      expect(outcome.error?.details).to.not.include("hf_abc");
    });

    it("then the name", async () => {
      const outcome = await pull(suite.t.client, { name: "../minilm", fixtureDir: "/nonexistent" });
      expect(outcome.error?.code).to.equal(status.INVALID_ARGUMENT);
      expect(outcome.error?.details).to.include("name");
    });

    it("then the registration", async () => {
      const outcome = await pull(suite.t.client, { name: "ghost", credentialAlias: "nosecret", fixtureDir: "/nonexistent" });
      expect(outcome.error?.code).to.equal(status.NOT_FOUND);
      expect(outcome.error?.details).to.equal("local AI model 'ghost' is not registered");
      expect(outcome.events).to.deep.equal([]);
    });

    it("then the request's credential alias, naming it and PutSecret", async () => {
      const outcome = await pull(suite.t.client, { name: "minilm", credentialAlias: "hf_team", fixtureDir: "/nonexistent" });
      expect(outcome.error?.code).to.equal(status.FAILED_PRECONDITION);
      expect(outcome.error?.details).to.include("'hf_team'").and.include("PutSecret");
    });

    it("then the model's own credential alias, whatever the source", async () => {
      await call(suite.t.client, "updateModel", { name: "minilm", model: modelSpec({ credentialAlias: "hf_model" }) });
      const outcome = await pull(suite.t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
      expect(outcome.error?.code).to.equal(status.FAILED_PRECONDITION);
      expect(outcome.error?.details).to.include("'hf_model'").and.include("PutSecret");
      await call(suite.t.client, "putSecret", { alias: "hf_model", value: "s3cret-value" });
      const events = await pullOk(suite.t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
      expect(JSON.stringify(events)).to.not.include("s3cret-value");
    });

    it("refuses an invalid request credential alias naming credential_alias", async () => {
      const outcome = await pull(suite.t.client, { name: "minilm", credentialAlias: "a/b", fixtureDir: FIXTURE_DIR });
      expect(outcome.error?.code).to.equal(status.INVALID_ARGUMENT);
      expect(outcome.error?.details).to.include("credential_alias");
    });

    it("then the source: none at all (offline, no fixture dir) is FAILED_PRECONDITION naming fixture_dir and the flag", async () => {
      const outcome = await pull(suite.t.client, { name: "minilm" });
      expect(outcome.error?.code).to.equal(status.FAILED_PRECONDITION);
      expect(outcome.error?.details).to.include("fixture_dir").and.include("--fixture-dir");
    });

    it("a missing fixture_dir is INVALID_ARGUMENT naming the path", async () => {
      const outcome = await pull(suite.t.client, { name: "minilm", fixtureDir: "/nonexistent/models/x" });
      expect(outcome.error?.code).to.equal(status.INVALID_ARGUMENT);
      expect(outcome.error?.details).to.include("/nonexistent/models/x").and.include("does not exist or is not a directory");
    });

    it("a fixture_dir that is a file is INVALID_ARGUMENT naming the path", async () => {
      const path = join(FIXTURE_DIR, "config.json");
      const outcome = await pull(suite.t.client, { name: "minilm", fixtureDir: path });
      expect(outcome.error?.code).to.equal(status.INVALID_ARGUMENT);
      expect(outcome.error?.details).to.include(path).and.include("does not exist or is not a directory");
    });

    it("a fixture_dir with no artifact files after the skips is INVALID_ARGUMENT", async () => {
      const dir = await source({ ".hidden": "x", "manifest.json": "{}" });
      const outcome = await pull(suite.t.client, { name: "minilm", fixtureDir: dir });
      expect(outcome.error?.code).to.equal(status.INVALID_ARGUMENT);
      expect(outcome.error?.details).to.include(dir).and.include("has no artifact files");
    });

    it("a refused pull leaves the registry and the previous install as they were", async () => {
      await pullOk(suite.t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
      const before = await snapshot(join(suite.t.cacheRoot, "minilm"));
      const { model } = await call(suite.t.client, "getModel", { name: "minilm" });
      const empty = await source({ ".only-hidden": "x" });
      expect((await pull(suite.t.client, { name: "minilm", fixtureDir: empty })).error?.code).to.equal(status.INVALID_ARGUMENT);
      expect(await snapshot(join(suite.t.cacheRoot, "minilm"))).to.deep.equal(before);
      expect((await call(suite.t.client, "getModel", { name: "minilm" })).model).to.deep.equal(model);
    });
  });

  it("refuses a source file whose name holds a control character", async () => {
    const dir = await source({ "ok.json": "{}" });
    await writeFile(join(dir, "bad\nname.bin"), "x");
    const outcome = await pull(suite.t.client, { name: "minilm", fixtureDir: dir });
    expect(outcome.error?.code).to.equal(status.INVALID_ARGUMENT);
    expect(outcome.error?.details).to.include("control character");
  });
});
