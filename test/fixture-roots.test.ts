// A PullRequest's fixture_dir must lie inside an allowed root: `..` tricks,
// absolute paths elsewhere, siblings that share a prefix and symbolic links
// that lead out are refused with PERMISSION_DENIED before anything is read.
import { cp, mkdtemp, rm, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Metadata, status } from "@grpc/grpc-js";
import { expect } from "chai";
import { pino } from "pino";
import { AccessTokens, newToken } from "../src/auth/access-tokens.js";
import { startServer } from "../src/server/start-server.js";
import { CacheStatus } from "../generated/modelcache/v1/model_cache.js";
import { FIXTURE_DIR, type TestServer, call, modelSpec, pull, pullOk, startTestServer } from "./support/test-server.js";

describe("fixture roots", () => {
  let base: string;
  let t: TestServer | undefined;
  beforeEach(async () => {
    base = await mkdtemp(join(tmpdir(), "modelcache-roots-"));
    for (const dir of ["root/model", "root-sibling/model", "outside/model"]) await cp(FIXTURE_DIR, join(base, dir), { recursive: true });
    await symlink(join(base, "outside"), join(base, "root", "link-out"));
    await symlink(join(base, "root"), join(base, "linked-root"));
    await symlink(join(base, "outside", "not-yet"), join(base, "root", "dangling-out"));
    await symlink(join(base, "root", "model"), join(base, "root", "alias"));
  });
  afterEach(async () => {
    await t?.close();
    t = undefined;
    await rm(base, { recursive: true, force: true });
  });

  async function serve(fixtureRoots: string[]): Promise<TestServer> {
    t = await startTestServer({ fixtureRoots });
    await call(t.client, "registerModel", { model: modelSpec() });
    return t;
  }

  async function refusal(server: TestServer, fixtureDir: string): Promise<{ code?: status; details?: string }> {
    const outcome = await pull(server.client, { name: "minilm", fixtureDir });
    return { code: outcome.error?.code, details: outcome.error?.details };
  }

  it("pulls from a directory inside a root", async () => {
    const server = await serve([join(base, "root")]);
    const events = await pullOk(server.client, { name: "minilm", fixtureDir: join(base, "root", "model") });
    expect(events.at(-1)?.completed).to.not.equal(undefined);
  });

  const escapes: [string, (base: string) => string][] = [
    ["a sibling sharing the root's prefix", (b) => join(b, "root-sibling", "model")],
    ["a `..` out of the root", (b) => `${b}/root/../outside/model`],
    ["an absolute path elsewhere", () => "/etc"],
    ["a path elsewhere that does not exist", () => "/no/such/dir"],
    ["a symbolic link inside the root leading out", (b) => join(b, "root", "link-out")],
    ["a path through a symbolic link leading out", (b) => join(b, "root", "link-out", "model")],
    ["a path that does not exist below a link leading out", (b) => join(b, "root", "link-out", "nothing-here")],
    ["a dangling link whose missing target lies outside", (b) => join(b, "root", "dangling-out")],
  ];
  for (const [what, path] of escapes) {
    it(`refuses ${what} with PERMISSION_DENIED naming --fixture-root, installing nothing`, async () => {
      const server = await serve([join(base, "root")]);
      const { code, details } = await refusal(server, path(base));
      expect(code).to.equal(status.PERMISSION_DENIED);
      expect(details).to.include("--fixture-root").and.not.include("does not exist");
      const report = await call(server.client, "inspectCache", { name: "minilm", deep: false });
      expect(report.status).to.equal(CacheStatus.CACHE_STATUS_MISSING);
    });
  }

  it("says a directory inside a root does not exist only after admitting it, also below a link that stays inside", async () => {
    const server = await serve([join(base, "root")]);
    for (const missing of [join(base, "root", "missing"), join(base, "root", "alias", "missing")]) {
      const { code, details } = await refusal(server, missing);
      expect(code, missing).to.equal(status.INVALID_ARGUMENT);
      expect(details).to.include("does not exist");
    }
  });

  it("pulls through a link that stays inside the root", async () => {
    const server = await serve([join(base, "root")]);
    await pullOk(server.client, { name: "minilm", fixtureDir: join(base, "root", "alias") });
  });

  it("resolves a root given through a symbolic link, accepting both spellings of a directory inside it", async () => {
    const server = await serve([join(base, "linked-root")]);
    await pullOk(server.client, { name: "minilm", fixtureDir: join(base, "linked-root", "model") });
    await pullOk(server.client, { name: "minilm", fixtureDir: join(base, "root", "model") });
    expect((await refusal(server, join(base, "outside", "model"))).code).to.equal(status.PERMISSION_DENIED);
  });

  it("refuses control characters in fixture_dir as INVALID_ARGUMENT", async () => {
    const server = await serve([join(base, "root")]);
    const { code, details } = await refusal(server, `${base}/root/model\u0000x`);
    expect(code).to.equal(status.INVALID_ARGUMENT);
    expect(details).to.include("fixture_dir");
  });

  it("without any root, refuses every fixture_dir once the server requires tokens", async () => {
    const admin = newToken("ops", "admin");
    t = await startTestServer({ authTokens: AccessTokens.parse(JSON.stringify({ tokens: [admin.entry] })) });
    const metadata = new Metadata();
    metadata.set("authorization", `Bearer ${admin.token}`);
    await call(t.client, "registerModel", { model: modelSpec() }, metadata);
    const outcome = await pull(t.client, { name: "minilm", fixtureDir: join(base, "root", "model") }, { metadata });
    expect(outcome.error?.code).to.equal(status.PERMISSION_DENIED);
    expect(outcome.error?.details).to.include("--fixture-root");
  });

  it("without any root, accepts any fixture_dir on a loopback server without auth", async () => {
    t = await startTestServer();
    await call(t.client, "registerModel", { model: modelSpec() });
    await pullOk(t.client, { name: "minilm", fixtureDir: join(base, "outside", "model") });
  });

  it("refuses to start with a root that does not exist", async () => {
    let error: Error | undefined;
    await startServer({ listen: "127.0.0.1:0", dataDir: join(base, "data"), fixtureRoots: [join(base, "nope")], logger: pino({ level: "silent" }) }).catch((err: Error) => (error = err));
    expect(error?.message).to.include("--fixture-root").and.include("nope");
  });
});
