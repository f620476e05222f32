// The client example in docs/serving.md runs as written against a server whose hub
// serves the model it asks for.
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { expect } from "chai";
import { FakeHub } from "./support/fake-hub.js";
import { FIXTURE_DIR, type TestServer, startTestServer } from "./support/test-server.js";

const run = promisify(execFile);
const EXAMPLE = join(import.meta.dirname, "..", "examples", "client.ts");
const TSX = join(import.meta.dirname, "..", "node_modules", "tsx", "dist", "cli.mjs");

describe("the TypeScript client example", () => {
  let hub: FakeHub;
  let t: TestServer;

  beforeEach(async () => {
    hub = await FakeHub.serve("sentence-transformers/all-MiniLM-L6-v2", FIXTURE_DIR);
    t = await startTestServer({ hubUrl: hub.url });
  });
  afterEach(async () => {
    await t.close();
    await hub.close();
  });

  it("registers, pulls and reports the install, then finds it installed on a second run", async () => {
    const first = await run(process.execPath, [TSX, EXAMPLE, t.server.address]);
    expect(first.stdout).to.include("before: CACHE_STATUS_MISSING");
    expect(first.stdout).to.include(`pulling minilm from hub:sentence-transformers/all-MiniLM-L6-v2@${hub.commit}`);
    expect(first.stdout).to.match(/installed at .*ai_models_cache\/minilm/);
    const second = await run(process.execPath, [TSX, EXAMPLE, t.server.address]);
    expect(second.stdout).to.include("before: CACHE_STATUS_INSTALLED");
  });
});

describe("the TypeScript client example, offline", () => {
  let t: TestServer;
  beforeEach(async () => {
    // no hub: the test server is offline
    t = await startTestServer();
  });
  afterEach(() => t.close());

  it("installs from a local directory given as its source", async () => {
    const { stdout } = await run(process.execPath, [TSX, EXAMPLE, t.server.address, FIXTURE_DIR]);
    expect(stdout).to.include(`pulling minilm from dir:${FIXTURE_DIR}`);
    expect(stdout).to.match(/installed at .*ai_models_cache\/minilm/);
  });

  it("fails with one line naming the cause, no stack trace, when the hub cannot be used", async () => {
    const failed = await run(process.execPath, [TSX, EXAMPLE, t.server.address]).then(
      () => expect.fail("the example succeeded offline"),
      (err: { code: number; stderr: string }) => err,
    );
    expect(failed.code).to.equal(1);
    const lines = failed.stderr.trim().split("\n");
    expect(lines, failed.stderr).to.have.length(1);
    expect(lines[0]).to.match(/^error: /);
  });
});

describe("docs/serving.md", () => {
  it("shows the client example exactly as the file that CI compiles and the tests run", async () => {
    const doc = await readFile(join(import.meta.dirname, "..", "docs", "serving.md"), "utf8");
    const example = await readFile(EXAMPLE, "utf8");
    expect(doc).to.include("```ts\n" + example + "```\n");
  });
});

describe("the ResolveModel example", () => {
  let t: TestServer;
  beforeEach(async () => {
    t = await startTestServer({ fixtureDir: FIXTURE_DIR });
  });
  afterEach(() => t.close());

  it("resolves the model under a lease, reads config.json from the path, and releases the lease", async () => {
    const { call, modelSpec } = await import("./support/test-server.js");
    await call(t.client, "registerModel", { model: modelSpec() });
    const { stdout } = await run(process.execPath, [TSX, join(import.meta.dirname, "..", "examples", "resolve.ts"), t.server.address, "minilm"]);
    expect(stdout).to.match(/^minilm at .*ai_models_cache\/minilm \(pulled now\), lease \S+ until /);
    expect(stdout).to.match(/config\.json has \d+ keys/);
    expect(stdout).to.include("lease released: true");
    expect((await call(t.client, "getModel", { name: "minilm" })).model!.leases).to.equal(0);
  });
});
