// A full disk, for real: a 96 MiB ext4 image, loop-mounted as the data dir
// and filled by a ballast file at the moment each test chooses.
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import { expect } from "chai";
import { runCli } from "./support/run-cli.js";
import { type SmallDisk, mountSmallDisk } from "./support/small-disk.js";
import { type TestServer, call, callError, modelSpec, startTestServer } from "./support/test-server.js";

describe("a full disk", function () {
  this.timeout(120_000);
  let disk: SmallDisk;
  let t: TestServer | undefined;
  beforeEach(async function () {
    const mounted = await mountSmallDisk();
    if (typeof mounted === "string") this.skip();
    disk = mounted as SmallDisk;
  });
  afterEach(async () => {
    await t?.close();
    t = undefined;
    await disk?.unmount();
  });

  async function serverOnDisk(): Promise<TestServer> {
    const dataDir = join(disk.dir, "data");
    await mkdir(dataDir);
    return startTestServer({ dataDir, minFreeBytes: 0 });
  }

  describe("the registry", () => {
    it("keeps every acknowledged write across a restart after a write failed for lack of space", async () => {
      t = await serverOnDisk();
      const acknowledged: string[] = [];
      for (let i = 0; i < 3; i++) {
        await call(t.client, "registerModel", { model: modelSpec({ name: `before-${i}` }) });
        acknowledged.push(`before-${i}`);
      }
      await disk.fill();
      // the log's last block may take a few more records: write until LevelDB fails
      let refusal;
      for (let i = 0; i < 5000 && !refusal; i++) {
        try {
          await call(t.client, "registerModel", { model: modelSpec({ name: `full-${i}`, source: `org/model-${"x".repeat(80)}` }) });
          acknowledged.push(`full-${i}`);
        } catch (err) {
          refusal = err as { code: number; details: string };
        }
      }
      expect(refusal, "a registration on the full disk failed").to.not.equal(undefined);
      expect(refusal!.code, refusal!.details).to.equal(status.RESOURCE_EXHAUSTED);
      expect(refusal!.details).to.include(join(disk.dir, "data", "registry"));
      // still full: refused, not written after the torn record
      const again = await callError(t.client, "registerModel", { model: modelSpec({ name: "still-full" }) });
      expect(again.code).to.equal(status.RESOURCE_EXHAUSTED);
      expect(again.details).to.match(/free space/);

      await disk.release(16 * 1024 * 1024);
      for (let i = 0; i < 120; i++) {
        await call(t.client, "registerModel", { model: modelSpec({ name: `after-${i}` }) });
        acknowledged.push(`after-${i}`);
      }
      await call(t.client, "putSecret", { alias: "hf-after", value: "s3cr3t-after" });
      await call(t.client, "updateModel", { name: "before-0", model: modelSpec({ name: "before-0", dimensions: 768 }) });

      await t.restart();
      const { models } = await call(t.client, "listModels", {});
      const names = new Set(models.map((m) => m.name));
      const lost = acknowledged.filter((name) => !names.has(name));
      expect(lost, "acknowledged registrations missing after the restart").to.deep.equal([]);
      expect(names.has("still-full")).to.equal(false);
      const { model } = await call(t.client, "getModel", { name: "before-0" });
      expect(model!.dimensions).to.equal(768);
      expect(await t.server.runtime.registry.vault.get("hf-after")).to.equal("s3cr3t-after");
    });
  });

  describe("a start", () => {
    it("exits non-zero naming the cause when the registry cannot be opened for lack of space", async () => {
      t = await serverOnDisk();
      // entries left in LevelDB's log: opening recovers them into a table, which needs room
      for (let i = 0; i < 20; i++) await call(t.client, "registerModel", { model: modelSpec({ name: `m-${i}` }) });
      await t.close();
      t = undefined;
      await disk.fill();
      const run = await runCli("127.0.0.1:1", ["serve", "--listen", "127.0.0.1:0", "--data-dir", join(disk.dir, "data"), "--log-format", "json"]);
      expect(run.code).to.not.equal(0);
      const output = run.stdout + run.stderr;
      expect(output).to.match(/no space left on device/i);
      expect(output).to.include(join(disk.dir, "data", "registry"));
      expect(output).to.not.include("modelcache is serving");
    });
  });
});
