import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { type FileSync, fileSync } from "../src/cache/writeback.js";
import { ModelCacheError } from "../src/errors.js";
import { downloadFile } from "../src/sources/hub/download-file.js";
import { downloadInSegments } from "../src/sources/hub/download-segments.js";
import { HubHttp } from "../src/sources/hub/hub-http.js";
import { FakeHub } from "./support/fake-hub.js";
import { FIXTURE_DIR } from "./support/test-server.js";
import { patternedBytes } from "./support/source-dir.js";

const REPO = "acme/durable";
// past the 64 MiB after which a background sync starts
const SIZE = 72 * 1024 * 1024;
const content = patternedBytes(SIZE);

/** A disk whose background data syncs fail with EIO from the `failFrom`th on; every other sync is real. */
function failingDataSync(failFrom = 1): FileSync & { calls: number } {
  const sync = {
    calls: 0,
    data: async (handle: Parameters<FileSync["data"]>[0]) => {
      sync.calls += 1;
      if (sync.calls >= failFrom) throw Object.assign(new Error("EIO: i/o error, fdatasync"), { code: "EIO" });
      await fileSync.data(handle);
    },
    all: fileSync.all,
  };
  return sync;
}

describe("downloads and a disk that fails to sync", () => {
  let hub: FakeHub;
  let dir: string;
  let http: HubHttp;
  beforeEach(async () => {
    hub = await FakeHub.serve(REPO, FIXTURE_DIR, { "weights/model.safetensors": content });
    dir = await mkdtemp(join(tmpdir(), "modelcache-sync-"));
    http = new HubHttp({ baseUrl: hub.url, attempts: 1 });
  });
  afterEach(async () => {
    await hub.close();
    await rm(dir, { recursive: true, force: true });
  });
  const options = (sync: FileSync, signal = new AbortController().signal) => ({
    http,
    url: http.url(`${REPO}/resolve/${hub.commit}/weights/model.safetensors`),
    path: "weights/model.safetensors",
    partialPath: join(dir, "partial", "model.safetensors"),
    sizeBytes: SIZE,
    sha256: hub.file("weights/model.safetensors").sha256,
    signal,
    onBytes: () => undefined,
    sync,
  });
  const failure = (promise: Promise<unknown>) =>
    promise.then(
      () => expect.fail("the download succeeded although a sync failed"),
      (err: unknown) => err as ModelCacheError,
    );

  it("fails a single-stream download whose background datasync failed, and keeps none of its bytes", async () => {
    const sync = failingDataSync();
    const err = await failure(downloadFile(options(sync)));
    expect(sync.calls).to.be.at.least(1);
    expect(err).to.be.instanceOf(ModelCacheError);
    expect(err.message).to.include("failed to sync").and.include("EIO");
    expect(await readdir(join(dir, "partial"))).to.deep.equal([]);
  });

  it("fails a download in ranges whose background datasync failed, and keeps neither its bytes nor its resume state", async () => {
    const sync = failingDataSync();
    const err = await failure(downloadInSegments({ ...options(sync), sha256: options(sync).sha256 }));
    expect(err.message).to.include("failed to sync").and.include("EIO");
    expect(await readdir(join(dir, "partial"))).to.deep.equal([]);
  });

  it("fails when the final sync fails, even though every background sync succeeded", async () => {
    const sync = { data: fileSync.data, all: failingDataSync().data };
    const err = await failure(downloadFile(options(sync)));
    expect(err.message).to.include("failed to sync");
  });

  it("records in the resume state only bytes a completed sync has put on the disk", async () => {
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let syncs = 0;
    // the first background sync does not end until every byte has been written
    const sync: FileSync = {
      data: async (handle) => {
        syncs += 1;
        if (syncs === 1) await held;
        await fileSync.data(handle);
      },
      all: fileSync.all,
    };
    const statePath = `${options(sync).partialPath}.segments.json`;
    const recorded: number[] = [];
    let written = 0;
    const download = downloadInSegments({
      ...options(sync),
      sha256: options(sync).sha256,
      onBytes: (bytes) => (written += bytes),
    });
    while (written < SIZE) await new Promise((resolve) => setTimeout(resolve, 20));
    // whatever the state says now, it says while no sync has completed
    for (let i = 0; i < 10; i++) {
      const state = JSON.parse(await readFile(statePath, "utf8")) as { segments: { done: number }[] };
      recorded.push(state.segments.reduce((sum, s) => sum + s.done, 0));
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    release();
    expect(await download).to.equal(hub.file("weights/model.safetensors").sha256);
    expect(recorded.every((bytes) => bytes === 0), `bytes recorded before any sync completed: ${recorded.join(", ")}`).to.equal(true);
  });
});
