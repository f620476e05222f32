import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { expect } from "chai";
import { syncDirectory } from "../src/fs/durable.js";
import { FileCopier } from "../src/cache/file-copier.js";
import { ContentStore } from "../src/store/content-store.js";
import { installArtifacts } from "../src/cache/install-artifacts.js";
import { CacheLayout } from "../src/cache/layout.js";
import { parseManifest } from "../src/cache/manifest.js";
import { openDirectorySource } from "../src/sources/local-directory.js";
import { makeSourceDir, sha256 } from "./support/source-dir.js";

// installArtifacts on its own, with a real directory source and the real
// worker-pool copier, below the pull jobs that normally drive it.
describe("installArtifacts", () => {
  let root: string;
  let copier: FileCopier;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), "modelcache-install-"));
    copier = new FileCopier();
  });
  afterEach(async () => {
    await copier.close();
    await rm(root, { recursive: true, force: true });
  });

  const model = { source: "org/m", revision: "main", task: "embedding", engine: "candle", dimensions: 8 };

  it("installs every file with its sha256, reporting each byte once", async () => {
    const made = await makeSourceDir({ "a.bin": Buffer.alloc(3 * 1024 * 1024 + 5, 9), "sub/b.json": "{}" });
    try {
      const source = await openDirectorySource(made.dir, "fixture_dir");
      const seen: Record<string, number> = {};
      const completed: string[] = [];
      const layout = new CacheLayout(root);
      const manifest = await installArtifacts({
        layout,
        name: "m",
        source,
        copier,
        store: await new ContentStore(root).open(),
        model,
        signal: new AbortController().signal,
        concurrency: 2,
        observer: {
          fileStarted: () => undefined,
          bytesWritten: (file, n) => (seen[file.path] = (seen[file.path] ?? 0) + n),
          fileCompleted: (file) => completed.push(file.path),
        },
      });
      expect(seen).to.deep.equal({ "a.bin": 3 * 1024 * 1024 + 5, "sub/b.json": 2 });
      expect(completed.sort()).to.deep.equal(["a.bin", "sub/b.json"]);
      const onDisk = parseManifest(await readFile(join(root, "m", "manifest.json"), "utf8"));
      expect(onDisk).to.deep.equal(manifest);
      expect(manifest.files.find((f) => f.path === "a.bin")!.sha256).to.equal(sha256(await readFile(join(made.dir, "a.bin"))));
      expect(await readdir(join(root, ".staging"))).to.deep.equal([]);
    } finally {
      await made.cleanup();
    }
  });

  it("syncs every directory a nested file path creates in staging, each ancestor as well as the parent", async () => {
    const made = await makeSourceDir({ "top.json": "{}", "a/b/c/deep.bin": "deep", "a/side.txt": "side" });
    try {
      const source = await openDirectorySource(made.dir, "fixture_dir");
      const synced: string[] = [];
      await installArtifacts({
        layout: new CacheLayout(root),
        name: "m",
        source,
        copier,
        store: await new ContentStore(root).open(),
        model,
        signal: new AbortController().signal,
        concurrency: 2,
        observer: { fileStarted: () => undefined, bytesWritten: () => undefined, fileCompleted: () => undefined },
        syncDirectory: async (path) => {
          synced.push(path);
          await syncDirectory(path);
        },
      });
      const staging = synced.find((path) => relative(join(root, ".staging"), path).match(/^m\.[0-9a-f]+$/));
      expect(staging, "the staging dir itself is synced").to.not.equal(undefined);
      const inStaging = synced.filter((path) => path.startsWith(staging!)).map((path) => relative(staging!, path));
      expect(inStaging.sort()).to.deep.equal(["", "a", "a/b", "a/b/c"]);
    } finally {
      await made.cleanup();
    }
  });

  it("removes its staging dir when aborted, leaving no install", async () => {
    const made = await makeSourceDir({ "a.bin": Buffer.alloc(8 * 1024 * 1024, 1) });
    try {
      const source = await openDirectorySource(made.dir, "fixture_dir");
      const controller = new AbortController();
      let error: unknown;
      await installArtifacts({
        layout: new CacheLayout(root),
        name: "m",
        source,
        copier,
        store: await new ContentStore(root).open(),
        model,
        signal: controller.signal,
        concurrency: 1,
        observer: { fileStarted: () => controller.abort(new Error("stop")), bytesWritten: () => undefined, fileCompleted: () => undefined },
      }).catch((err: unknown) => (error = err));
      expect((error as Error).message).to.equal("stop");
      expect(await readdir(join(root, ".staging"))).to.deep.equal([]);
      expect(await readdir(root)).to.not.include("m");
    } finally {
      await made.cleanup();
    }
  });
});
