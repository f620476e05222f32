// The registry's cache of model records (src/registry/record-cache.ts) on a
// real LevelDB in a temp dir: every write of a record, however it is made,
// is seen by the next read, a read made while a write of the same record is
// in flight is not kept, and the records it hands out cannot be changed in place.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import type { ModelRecord } from "../src/registry/model-record.js";
import { type Registry, openRegistry } from "../src/registry/open-registry.js";

describe("the registry's record cache", () => {
  let dataDir: string;
  let registry: Registry;
  const record = (dimensions: number) => ({ name: "a", source: "acme/a", dimensions, include: ["*.json"] }) as unknown as ModelRecord;
  beforeEach(async () => {
    dataDir = await mkdtemp(join(tmpdir(), "modelcache-record-cache-"));
    registry = await openRegistry(dataDir);
  });
  afterEach(async () => {
    await registry.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  it("answers each read with what the database holds after every put, batch, delete and clear", async () => {
    expect(registry.modelRecords.readSync("a")).to.equal(undefined);
    await registry.models.put("a", record(1));
    expect(registry.modelRecords.readSync("a")?.dimensions).to.equal(1);
    await registry.models.put("a", record(2));
    expect(registry.modelRecords.readSync("a")?.dimensions).to.equal(2);
    await registry.models.batch([{ type: "put", key: "a", value: record(3) }]);
    expect(registry.modelRecords.readSync("a")?.dimensions).to.equal(3);
    await registry.db.batch([{ type: "put", key: "a", value: record(4), sublevel: registry.models as never }]);
    expect(registry.modelRecords.readSync("a")?.dimensions).to.equal(4);
    await registry.models.del("a");
    expect(registry.modelRecords.readSync("a")).to.equal(undefined);
    await registry.models.put("a", record(5));
    expect(registry.modelRecords.readSync("a")?.dimensions).to.equal(5);
    await registry.models.clear();
    expect(registry.modelRecords.readSync("a")).to.equal(undefined);
  });

  it("does not keep a read made while a write of the same record is in flight", async () => {
    await registry.models.put("a", record(1));
    const writing = registry.models.put("a", record(2));
    // the old record or the new, whichever LevelDB has now
    expect([1, 2]).to.include(registry.modelRecords.readSync("a")?.dimensions);
    expect(registry.db.isChanging(`${registry.models.prefix}a`)).to.equal(true);
    await writing;
    expect(registry.db.isChanging(`${registry.models.prefix}a`)).to.equal(false);
    expect(registry.modelRecords.readSync("a")?.dimensions).to.equal(2);
  });

  it("hands out frozen records: a change in place throws instead of reaching the next reader", async () => {
    await registry.models.put("a", record(1));
    const read = registry.modelRecords.readSync("a")!;
    expect(() => {
      (read as { dimensions: number }).dimensions = 9;
    }).to.throw(TypeError);
    expect(() => read.include.push("*.bin")).to.throw(TypeError);
    expect(registry.modelRecords.readSync("a")).to.deep.include({ dimensions: 1, include: ["*.json"] });
  });
});
