import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { expect } from "chai";

const run = promisify(execFile);
const SUPPORT = join(import.meta.dirname, "support", "test-server.ts");

// In a process of its own: whether piscina is loaded is a fact about the whole process.
const SCRIPT = `
import { createRequire } from "node:module";
import { sep } from "node:path";
const { FIXTURE_DIR, call, modelSpec, pullOk, startTestServer } = await import(${JSON.stringify(SUPPORT)});
const loaded = () => Object.keys(createRequire(import.meta.url).cache).some((path) => path.includes(sep + "piscina" + sep));
const t = await startTestServer();
const atStart = loaded();
await call(t.client, "registerModel", { model: modelSpec() });
await call(t.client, "inspectCache", { name: "minilm", deep: false });
const afterShallowInspect = loaded();
await pullOk(t.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
const afterDirectoryPull = loaded();
await t.close();
console.log(JSON.stringify({ atStart, afterShallowInspect, afterDirectoryPull }));
`;

describe("the worker pool that copies and hashes files", () => {
  it("is not loaded when the server starts, only for the first directory pull", async () => {
    const { stdout } = await run(process.execPath, ["--import", "tsx", "--input-type=module", "-e", SCRIPT], { cwd: join(import.meta.dirname, "..") });
    const seen = JSON.parse(stdout.trim().split("\n").at(-1)!) as Record<string, boolean>;
    expect(seen).to.deep.equal({ atStart: false, afterShallowInspect: false, afterDirectoryPull: true });
  });
});
