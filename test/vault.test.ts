import { randomBytes } from "node:crypto";
import { chmod, readFile, readdir, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Metadata, status, type ServiceError } from "@grpc/grpc-js";
import { Level } from "level";
import { expect } from "chai";
import { isCredentialKey } from "../src/grpc/reject-plaintext-credentials.js";
import { healthCheck } from "./support/health-check.js";
import { type TestServer, call, callError, modelSpec, startTestServer } from "./support/test-server.js";

describe("credential vault", () => {
  let t: TestServer;
  beforeEach(async () => {
    t = await startTestServer();
  });
  afterEach(() => t.close());

  it("stores a secret and deletes it once: removed true, then false", async () => {
    expect(await call(t.client, "putSecret", { alias: "hf_prod", value: "hf_XYZ" })).to.deep.equal({});
    expect(await call(t.client, "deleteSecret", { alias: "hf_prod" })).to.deep.equal({ removed: true });
    expect(await call(t.client, "deleteSecret", { alias: "hf_prod" })).to.deep.equal({ removed: false });
  });

  it("replaces a secret stored again under the same alias", async () => {
    await call(t.client, "putSecret", { alias: "hf", value: "one" });
    await call(t.client, "putSecret", { alias: "hf", value: "two" });
    expect(await t.server.runtime.registry.vault.get("hf")).to.equal("two");
  });

  it("refuses an empty value with INVALID_ARGUMENT naming value", async () => {
    const err = await callError(t.client, "putSecret", { alias: "hf", value: "" });
    expect(err.code).to.equal(status.INVALID_ARGUMENT);
    expect(err.details).to.include("value");
  });

  for (const alias of ["", "hf.prod", "hf prod", "../x"]) {
    it(`refuses the alias ${JSON.stringify(alias)} with INVALID_ARGUMENT naming alias, without echoing the value`, async () => {
      const err = await callError(t.client, "putSecret", { alias, value: "top-secret-value" });
      expect(err.code).to.equal(status.INVALID_ARGUMENT);
      expect(err.details).to.include("alias");
      expect(err.details).to.not.include("top-secret-value");
      expect((await callError(t.client, "deleteSecret", { alias })).code).to.equal(status.INVALID_ARGUMENT);
    });
  }

  it("never returns a secret: models that use an alias show only the alias", async () => {
    await call(t.client, "putSecret", { alias: "hf", value: "hf_supersecret" });
    await call(t.client, "registerModel", { model: modelSpec({ credentialAlias: "hf" }) });
    const everything = JSON.stringify([await call(t.client, "listModels", {}), await call(t.client, "getModel", { name: "minilm" })]);
    expect(everything).to.include('"credentialAlias":"hf"');
    expect(everything).to.not.include("hf_supersecret");
  });
});

describe("plaintext credentials in call metadata", () => {
  let t: TestServer;
  beforeEach(async () => {
    t = await startTestServer();
  });
  afterEach(() => t.close());

  const refused = ["hf-token", "x-api-key", "api_key", "password", "X-Secret-Thing", "apikey", "my_auth_token", "x-hf-token-bin"];
  const allowed = ["authorization", "x-request-id", "tokens", "keyring", "api-version"];

  it("recognises credential-looking keys by their '-'/'_' parts", () => {
    for (const key of refused) expect(isCredentialKey(key), key).to.equal(true);
    for (const key of allowed) expect(isCredentialKey(key), key).to.equal(false);
  });

  for (const key of refused.filter((k) => !k.endsWith("-bin"))) {
    it(`refuses a call carrying '${key}' with INVALID_ARGUMENT pointing at the vault`, async () => {
      const metadata = new Metadata();
      metadata.set(key, "plaintext-value");
      const err = await callError(t.client, "listModels", {}, metadata);
      expect(err.code).to.equal(status.INVALID_ARGUMENT);
      expect(err.details).to.include("PutSecret").and.include("credential_alias");
      expect(err.details).to.not.include("plaintext-value");
    });
  }

  it("refuses a binary credential key too", async () => {
    const metadata = new Metadata();
    metadata.set("x-hf-token-bin", Buffer.from("plaintext"));
    expect((await callError(t.client, "listModels", {}, metadata)).code).to.equal(status.INVALID_ARGUMENT);
  });

  it("refuses it on every RPC, before validating the request, and changes nothing", async () => {
    const metadata = new Metadata();
    metadata.set("x-api-key", "k");
    const calls: Promise<ServiceError>[] = [
      callError(t.client, "registerModel", { model: modelSpec() }, metadata),
      callError(t.client, "updateModel", { name: "minilm", model: modelSpec() }, metadata),
      callError(t.client, "getModel", { name: "not a name" }, metadata),
      callError(t.client, "unregisterModel", { name: "minilm", dropCache: true }, metadata),
      callError(t.client, "inspectCache", { name: "minilm", deep: false }, metadata),
      callError(t.client, "dropCache", { name: "minilm", force: false }, metadata),
      callError(t.client, "putSecret", { alias: "hf", value: "v" }, metadata),
      callError(t.client, "deleteSecret", { alias: "hf" }, metadata),
    ];
    for (const err of await Promise.all(calls)) expect(err.code).to.equal(status.INVALID_ARGUMENT);
    expect((await call(t.client, "listModels", {})).models).to.deep.equal([]);
    expect(await t.server.runtime.registry.vault.get("hf")).to.equal(undefined);
  });

  it("lets authorization and ordinary metadata through", async () => {
    const metadata = new Metadata();
    metadata.set("authorization", "Bearer abc");
    metadata.set("x-request-id", "42");
    expect(await call(t.client, "listModels", {}, metadata)).to.deep.equal({ models: [] });
  });

  it("applies to the health service as well", async () => {
    const metadata = new Metadata();
    metadata.set("password", "p");
    const { code } = await healthCheck(t.server.address, "", metadata);
    expect(code).to.equal(status.INVALID_ARGUMENT);
  });
});

describe("the vault at rest", () => {
  let t: TestServer | undefined;
  afterEach(async () => {
    await t?.close();
    t = undefined;
  });

  /** Every byte of the registry's LevelDB files, as one latin1 string. */
  async function dump(dataDir: string): Promise<string> {
    const dir = join(dataDir, "registry");
    const files = await readdir(dir);
    return (await Promise.all(files.map((f) => readFile(join(dir, f))))).map((b) => b.toString("latin1")).join("");
  }

  it("creates a 32-byte key readable by its owner only, and keeps no plaintext in the LevelDB files", async () => {
    t = await startTestServer();
    const key = join(t.dataDir, "vault.key");
    expect((await stat(key)).mode & 0o777).to.equal(0o600);
    expect((await readFile(key)).length).to.equal(32);
    await call(t.client, "putSecret", { alias: "hf", value: "hf_plaintext_marker_123" });
    await call(t.client, "putSecret", { alias: "other", value: "hf_plaintext_marker_123" });
    await t.restart();
    expect(await t.server.runtime.registry.vault.get("hf")).to.equal("hf_plaintext_marker_123");
    const sealed = await t.server.runtime.registry.db.sublevel<string, string>("secrets", { valueEncoding: "utf8" }).values().all();
    expect(sealed).to.have.length(2);
    expect(sealed[0]).to.match(/^mcv1\./);
    expect(sealed[0]).to.not.equal(sealed[1]);
    await t.server.close();
    expect(await dump(t.dataDir)).to.not.include("hf_plaintext_marker_123");
    await t.restart();
  });

  it("seals secrets an earlier version stored in plaintext, and the plaintext leaves the files", async () => {
    t = await startTestServer();
    await t.server.close();
    const db = new Level<string, unknown>(join(t.dataDir, "registry"), { valueEncoding: "json" });
    await db.sublevel<string, string>("secrets", { valueEncoding: "utf8" }).put("legacy", "hf_legacy_plaintext_456");
    await db.close();
    expect(await dump(t.dataDir)).to.include("hf_legacy_plaintext_456");
    await t.restart();
    expect(await t.server.runtime.registry.vault.get("legacy")).to.equal("hf_legacy_plaintext_456");
    await t.server.close();
    expect(await dump(t.dataDir)).to.not.include("hf_legacy_plaintext_456");
    await t.restart();
  });

  it("refuses a key file its group or others may read, naming the fix", async () => {
    t = await startTestServer();
    await t.server.close();
    await chmod(join(t.dataDir, "vault.key"), 0o640);
    const error = await t.restart().catch((err: Error) => err);
    expect((error as Error).message).to.include("chmod 600").and.include("vault.key");
    await chmod(join(t.dataDir, "vault.key"), 0o600);
    await t.restart();
  });

  it("says a secret sealed under another key cannot be opened, without showing it", async () => {
    t = await startTestServer();
    await call(t.client, "putSecret", { alias: "hf", value: "hf_sealed_789" });
    await t.server.close();
    await writeFile(join(t.dataDir, "vault.key"), randomBytes(32), { mode: 0o600 });
    await t.restart();
    const error = await t.server.runtime.registry.vault.get("hf").catch((err: Error) => err);
    expect((error as Error).message).to.include("'hf'").and.include("vault key").and.not.include("hf_sealed_789");
  });
});

describe("the vault key, lost", () => {
  it("is not silently replaced while sealed secrets exist: the server refuses to start, naming the way out", async () => {
    const t = await startTestServer();
    try {
      await call(t.client, "putSecret", { alias: "hf", value: "hf_lost_key" });
      await t.server.close();
      await rm(join(t.dataDir, "vault.key"));
      const error = await t.restart().catch((err: Error) => err);
      expect((error as Error).message).to.include("does not exist").and.include("sealed").and.include("head -c 32 /dev/urandom");
      await writeFile(join(t.dataDir, "vault.key"), randomBytes(32), { mode: 0o600 });
      await t.restart();
      await call(t.client, "putSecret", { alias: "hf", value: "hf_new" });
      expect(await t.server.runtime.registry.vault.get("hf")).to.equal("hf_new");
    } finally {
      await t.close();
    }
  });
});
