// Authentication and roles: every RPC against no token, an unknown token, a
// reader, a consumer and an admin; health open; reflection for readers; authentication
// before any other check; loopback-only without auth; the audit log.
import { createHash } from "node:crypto";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Metadata, type ServiceError, status } from "@grpc/grpc-js";
import { expect } from "chai";
import { pino } from "pino";
import { AccessTokens, newToken } from "../src/auth/access-tokens.js";
import { startServer } from "../src/server/start-server.js";
import { bufCurl } from "./support/buf-curl.js";
import { type LogCapture, captureLogs } from "./support/log-capture.js";
import { healthCheck } from "./support/health-check.js";
import { runCli } from "./support/run-cli.js";
import { FIXTURE_DIR, type TestServer, call, modelSpec, pull, startTestServer } from "./support/test-server.js";
import { type ModelCacheServiceClient, PullPolicy } from "../generated/modelcache/v1/model_cache.js";

const reader = newToken("dashboard", "reader");
const consumer = newToken("embedder", "consumer");
const admin = newToken("deployer", "admin");
const tokens = AccessTokens.parse(JSON.stringify({ tokens: [reader.entry, consumer.entry, admin.entry] }));

function bearer(token: string | undefined): Metadata {
  const metadata = new Metadata();
  if (token !== undefined) metadata.set("authorization", `Bearer ${token}`);
  return metadata;
}

/** One call of each RPC; resolves with its status code. */
const RPCS: Record<string, (client: ModelCacheServiceClient, metadata: Metadata) => Promise<unknown>> = {
  GetModel: (c, m) => call(c, "getModel", { name: "minilm" }, m),
  ListModels: (c, m) => call(c, "listModels", {}, m),
  InspectCache: (c, m) => call(c, "inspectCache", { name: "minilm", deep: false }, m),
  RegisterModel: (c, m) => call(c, "registerModel", { model: modelSpec({ name: "other" }) }, m),
  UpdateModel: (c, m) => call(c, "updateModel", { name: "minilm", model: modelSpec() }, m),
  UnregisterModel: (c, m) => call(c, "unregisterModel", { name: "nope", dropCache: false }, m),
  DropCache: (c, m) => call(c, "dropCache", { name: "minilm", force: false }, m),
  DescribeCache: (c, m) => call(c, "describeCache", {}, m),
  PruneCache: (c, m) => call(c, "pruneCache", { dryRun: true }, m),
  PutSecret: (c, m) => call(c, "putSecret", { alias: "hf", value: "v" }, m),
  DeleteSecret: (c, m) => call(c, "deleteSecret", { alias: "hf" }, m),
  Pull: async (c, m) => {
    const outcome = await pull(c, { name: "minilm", fixtureDir: FIXTURE_DIR }, { metadata: m });
    if (outcome.error) throw outcome.error;
  },
  ApplyModels: (c, m) => call(c, "applyModels", { models: [modelSpec()], dryRun: true, prune: false }, m),
  ListLeases: (c, m) => call(c, "listLeases", { name: "" }, m),
  ResolveModel: (c, m) => call(c, "resolveModel", { name: "minilm", pullPolicy: PullPolicy.PULL_POLICY_IF_MISSING, credentialAlias: "", leaseSeconds: 60 }, m),
  ReleaseLease: (c, m) => call(c, "releaseLease", { leaseId: "no-such-lease" }, m),
};
/** the least role each RPC needs; the rest need an admin */
const LEAST_ROLE: Record<string, "reader" | "consumer"> = {
  GetModel: "reader",
  ListModels: "reader",
  InspectCache: "reader",
  DescribeCache: "reader",
  ListLeases: "reader",
  ResolveModel: "consumer",
  ReleaseLease: "consumer",
};
const leastRole = (rpc: string): "reader" | "consumer" | "admin" => LEAST_ROLE[rpc] ?? "admin";

async function codeOf(work: Promise<unknown>): Promise<status> {
  try {
    await work;
    return status.OK;
  } catch (err) {
    return (err as ServiceError).code;
  }
}

describe("authentication and roles", () => {
  let t: TestServer;
  let logs: LogCapture;
  beforeEach(async () => {
    logs = captureLogs("info");
    t = await startTestServer({ authTokens: tokens, fixtureDir: FIXTURE_DIR, logger: logs.logger });
    await call(t.client, "registerModel", { model: modelSpec() }, bearer(admin.token));
    logs.lines.length = 0;
  });
  afterEach(() => t.close());

  for (const [rpc, invoke] of Object.entries(RPCS)) {
    const least = leastRole(rpc);
    it(`${rpc}: UNAUTHENTICATED without a token or with an unknown one; needs the role '${least}' (a weaker one is PERMISSION_DENIED); allowed for an admin`, async () => {
      expect(await codeOf(invoke(t.client, bearer(undefined))), "no token").to.equal(status.UNAUTHENTICATED);
      expect(await codeOf(invoke(t.client, bearer("mct_not-a-real-token"))), "unknown token").to.equal(status.UNAUTHENTICATED);
      const asReader = await codeOf(invoke(t.client, bearer(reader.token)));
      expect(asReader, "reader").to.equal(least === "reader" ? status.OK : status.PERMISSION_DENIED);
      const asConsumer = await codeOf(invoke(t.client, bearer(consumer.token)));
      if (least === "admin") expect(asConsumer, "consumer").to.equal(status.PERMISSION_DENIED);
      else expect([status.UNAUTHENTICATED, status.PERMISSION_DENIED], "consumer").to.not.include(asConsumer);
      const asAdmin = await codeOf(invoke(t.client, bearer(admin.token)));
      expect([status.UNAUTHENTICATED, status.PERMISSION_DENIED], "admin").to.not.include(asAdmin);
    });
  }

  it("lets a consumer resolve a model under a lease, list and release it, and nothing that changes the registry, the secrets or the cache by hand", async () => {
    const resolved = await call(t.client, "resolveModel", { name: "minilm", pullPolicy: PullPolicy.PULL_POLICY_IF_MISSING, credentialAlias: "", leaseSeconds: 60 }, bearer(consumer.token));
    expect(resolved).to.include({ name: "minilm", pulled: true });
    const listed = await call(t.client, "listLeases", { name: "minilm" }, bearer(consumer.token));
    expect(listed.leases.map((l) => [l.leaseId, l.holder])).to.deep.equal([[resolved.leaseId, "embedder"]]);
    expect(await call(t.client, "releaseLease", { leaseId: resolved.leaseId }, bearer(consumer.token))).to.deep.equal({ released: true });
    const denied = (await call(t.client, "dropCache", { name: "minilm", force: true }, bearer(consumer.token)).catch((e: unknown) => e)) as ServiceError;
    expect(denied.code).to.equal(status.PERMISSION_DENIED);
    expect(denied.details).to.include("'embedder'").and.include("'consumer'").and.include("needs 'admin'").and.not.include(consumer.token);
    const reading = (await call(t.client, "resolveModel", { name: "minilm", pullPolicy: PullPolicy.PULL_POLICY_NEVER, credentialAlias: "", leaseSeconds: 0 }, bearer(reader.token)).catch((e: unknown) => e)) as ServiceError;
    expect(reading.details).to.include("needs 'consumer' or above").and.include("'consumer' or 'admin'");
  });

  it("names the missing role and the token, never the token's value", async () => {
    const err = (await call(t.client, "putSecret", { alias: "hf", value: "v" }, bearer(reader.token)).catch((e: unknown) => e)) as ServiceError;
    expect(err.details).to.include("'dashboard'").and.include("'reader'").and.include("'admin'").and.not.include(reader.token);
    const unknown = (await call(t.client, "listModels", {}, bearer("mct_guess")).catch((e: unknown) => e)) as ServiceError;
    expect(unknown.details).to.include("unknown bearer token").and.not.include("mct_guess");
  });

  it("authenticates before any other check: a bad request or a plaintext credential without a token is UNAUTHENTICATED", async () => {
    expect(await codeOf(call(t.client, "getModel", { name: "../../etc" }, bearer(undefined)))).to.equal(status.UNAUTHENTICATED);
    const withCredential = bearer(undefined);
    withCredential.set("x-api-key", "plaintext");
    expect(await codeOf(call(t.client, "listModels", {}, withCredential))).to.equal(status.UNAUTHENTICATED);
    const authenticated = bearer(admin.token);
    authenticated.set("x-api-key", "plaintext");
    expect(await codeOf(call(t.client, "listModels", {}, authenticated))).to.equal(status.INVALID_ARGUMENT);
  });

  it("answers health checks without a token", async () => {
    expect(await healthCheck(t.server.address, "modelcache.v1.ModelCacheService")).to.deep.equal({ code: status.OK, status: "SERVING" });
  });

  it("serves reflection to a reader, not to a caller without a token", async () => {
    const error = await bufCurl(t.server.address, "--list-services", "").catch((err: { stderr: string }) => err.stderr);
    expect(error).to.match(/not authenticated|unauthenticated/i);
    const services = await bufCurl(t.server.address, "--reflect-header", `authorization: Bearer ${reader.token}`, "--list-services", "");
    expect(services).to.include("modelcache.v1.ModelCacheService");
  });

  it("writes one audit line per mutating RPC with the caller's token name, method, model and result", async () => {
    await call(t.client, "dropCache", { name: "minilm", force: false }, bearer(admin.token));
    await call(t.client, "putSecret", { alias: "hf", value: "v" }, bearer(reader.token)).catch(() => undefined);
    await call(t.client, "getModel", { name: "minilm" }, bearer(reader.token));
    expect(logs.audit().map((l) => ({ caller: l.caller, method: l.method, model: l.model, alias: l.alias, result: l.result }))).to.deep.equal([
      { caller: "deployer", method: "DropCache", model: "minilm", alias: undefined, result: "OK" },
      { caller: "dashboard", method: "PutSecret", model: undefined, alias: undefined, result: "PERMISSION_DENIED" },
    ]);
    // every call was logged, and no line holds a token
    expect(logs.lines.filter((l) => l.msg === "rpc")).to.have.length(2);
    expect(logs.raw()).to.not.include(admin.token).and.not.include(reader.token);
  });
});

describe("a server without authentication", () => {
  it("refuses to listen beyond loopback, naming --auth-tokens and --insecure-no-auth", async () => {
    let error: Error | undefined;
    await startServer({ listen: "0.0.0.0:0", dataDir: "unused-never-created", logger: pino({ level: "silent" }) }).catch((err: Error) => (error = err));
    expect(error?.message).to.include("--auth-tokens").and.include("--insecure-no-auth");
  });

  it("listens beyond loopback with --insecure-no-auth, or with tokens over TLS or behind --insecure-no-tls", async () => {
    for (const options of [{ insecureNoAuth: true }, { authTokens: tokens, insecureNoTls: true }]) {
      const t = await startTestServer({ listen: "0.0.0.0:0", ...options });
      await t.close();
    }
  });

  it("refuses tokens beyond loopback in clear text, naming --tls-cert and --insecure-no-tls", async () => {
    const error = await startServer({ listen: "0.0.0.0:0", dataDir: "unused-never-created", authTokens: tokens, logger: pino({ level: "silent" }) }).catch((err: Error) => err);
    expect((error as Error).message).to.include("--tls-cert").and.include("--insecure-no-tls");
  });

  it("reads MODELCACHE_INSECURE_NO_AUTH=false as off, and refuses a value it cannot read", async () => {
    const dataDir = await mkdtemp(join(tmpdir(), "modelcache-env-"));
    try {
      const off = await runCli("unused", ["serve", "--listen", "0.0.0.0:0", "--data-dir", dataDir], { env: { MODELCACHE_INSECURE_NO_AUTH: "false" } });
      expect(off.code).to.equal(1);
      expect(off.stdout + off.stderr).to.include("--insecure-no-auth");
      const junk = await runCli("unused", ["serve", "--listen", "0.0.0.0:0", "--data-dir", dataDir], { env: { MODELCACHE_INSECURE_NO_AUTH: "maybe" } });
      expect(junk.code).to.equal(2);
      expect(junk.stderr).to.include("MODELCACHE_INSECURE_NO_AUTH");
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});

describe("access token files", () => {
  it("refuses entries that hold a token instead of its hash, or an unknown role, naming the field", () => {
    expect(() => AccessTokens.parse(JSON.stringify({ tokens: [{ name: "ci", sha256: admin.token, role: "admin" }] }))).to.throw(/tokens\[0\]\.sha256/);
    expect(() => AccessTokens.parse(JSON.stringify({ tokens: [{ ...admin.entry, role: "root" }] }))).to.throw(/tokens\[0\]\.role/);
    expect(() => AccessTokens.parse(JSON.stringify({ tokens: [admin.entry, admin.entry] }))).to.throw(/appears twice/);
    expect(() => AccessTokens.parse("{}")).to.throw(/"tokens"/);
  });
});

describe("the CLI and access tokens", () => {
  let t: TestServer;
  let dir: string;
  beforeEach(async () => {
    t = await startTestServer({ authTokens: tokens });
    dir = await mkdtemp(join(tmpdir(), "modelcache-tokens-"));
  });
  afterEach(async () => {
    await t.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("sends MODELCACHE_TOKEN or --token; without one it fails with a hint", async () => {
    const without = await runCli(t.server.address, ["models", "list"]);
    expect(without.code).to.equal(1);
    expect(without.stderr).to.include("no bearer token").and.include("hint: pass a token with --token or MODELCACHE_TOKEN");
    const byEnv = await runCli(t.server.address, ["models", "register", "minilm", "--source", "org/minilm", "--dimensions", "8"], { env: { MODELCACHE_TOKEN: admin.token } });
    expect(byEnv.code, byEnv.stderr).to.equal(0);
    const byFlag = await runCli(t.server.address, ["models", "list", "--token", reader.token]);
    expect(byFlag.code, byFlag.stderr).to.equal(0);
    expect(byFlag.stdout).to.include("minilm");
    const denied = await runCli(t.server.address, ["drop", "minilm", "--token", reader.token]);
    expect(denied.code).to.equal(1);
    expect(denied.stderr).to.include("needs 'admin'");
  });

  it("'tokens new' prints a token and its entry, and --file adds the entry to a 0600 file the server loads", async () => {
    const file = join(dir, "tokens.json");
    const made = await runCli(t.server.address, ["tokens", "new", "--name", "ci", "--role", "admin", "--file", file]);
    expect(made.code, made.stderr).to.equal(0);
    const token = /^token: (mct_\S+)$/m.exec(made.stdout)![1]!;
    const entry = JSON.parse(/^entry: (.*)$/m.exec(made.stdout)![1]!) as { name: string; sha256: string; role: string };
    expect(entry).to.include({ name: "ci", role: "admin" });
    expect(entry.sha256).to.equal(createHash("sha256").update(token).digest("hex"));
    expect((await stat(file)).mode & 0o777).to.equal(0o600);
    expect(await readFile(file, "utf8")).to.not.include(token);
    expect((await AccessTokens.load(file)).identify(token)).to.deep.equal({ name: "ci", role: "admin" });
    const again = await runCli(t.server.address, ["tokens", "new", "--name", "ci", "--role", "reader", "--file", file]);
    expect(again.code).to.equal(1);
    expect(again.stderr).to.include("already has a token named 'ci'");
    const badRole = await runCli(t.server.address, ["tokens", "new", "--name", "ci", "--role", "root"]);
    expect(badRole.code).to.equal(2);
  });
});
