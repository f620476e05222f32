import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import { PullPolicy } from "../generated/modelcache/v1/model_cache.js";
import { expect } from "chai";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { spawnServer } from "./support/child-server.js";
import { FakeS3, S3_CREDENTIALS, sha256hex } from "./support/fake-s3.js";
import { captureLogs } from "./support/log-capture.js";
import { type TestServer, call, callError, modelSpec, pull, pullOk, startTestServer } from "./support/test-server.js";
import { patternedBytes } from "./support/source-dir.js";

const BUCKET = "models";
const BIG = 3 * 1024 * 1024;
const big = patternedBytes(BIG);
const OBJECTS: Record<string, string | Buffer> = {
  "minilm/config.json": '{"hidden_size": 384}',
  "minilm/1_Pooling/config.json": '{"pooling_mode_mean_tokens": true}',
  "minilm/onnx/model.onnx": big,
  "minilm/tokenizer.json": "{}",
  "minilm-v2/config.json": "not this one",
};

describe("pulling from an S3-compatible store", () => {
  let s3: FakeS3;
  let t: TestServer;
  beforeEach(async () => {
    s3 = await FakeS3.start([BUCKET]);
    await s3.put(BUCKET, OBJECTS);
    t = await startTestServer({ offline: false, s3Endpoint: s3.url, progressIntervalMs: 0, parallelRangeMinBytes: 1024 * 1024, parallelRangeBelowBytesPerSecond: Infinity });
    await call(t.client, "putSecret", { alias: "store", value: JSON.stringify(S3_CREDENTIALS) });
    await call(t.client, "registerModel", { model: modelSpec({ source: `s3://${BUCKET}/minilm`, revision: "", credentialAlias: "store" }) });
  });
  afterEach(async () => {
    await t.close();
    await s3.close();
  });
  const installed = (path: string) => readFile(join(t.cacheRoot, "minilm", path));

  it("installs every object under the prefix with nested keys, and not those of a longer prefix", async () => {
    const events = await pullOk(t.client, { name: "minilm" });
    const manifest = events.at(-1)!.completed!.manifest!;
    expect(manifest.files.map((f) => f.path)).to.deep.equal(["1_Pooling/config.json", "config.json", "onnx/model.onnx", "tokenizer.json"]);
    for (const file of manifest.files) expect(sha256hex(await installed(file.path))).to.equal(file.sha256);
    expect(manifest.resolvedCommit).to.match(/^[0-9a-f]{40}$/);
    expect(events[0]!.started!.source).to.equal(`s3:${BUCKET}/minilm@${manifest.resolvedCommit}`);
    expect(s3.gets("minilm-v2/config.json")).to.deep.equal([]);
  });

  it("applies include and exclude before fetching anything", async () => {
    await call(t.client, "updateModel", { name: "minilm", model: modelSpec({ source: `s3://${BUCKET}/minilm`, revision: "", credentialAlias: "store", include: ["*.json"], exclude: ["tokenizer*"] }) });
    const events = await pullOk(t.client, { name: "minilm" });
    expect(events.at(-1)!.completed!.manifest!.files.map((f) => f.path)).to.deep.equal(["1_Pooling/config.json", "config.json"]);
    expect(s3.gets("minilm/onnx/model.onnx")).to.deep.equal([]);
    expect(s3.gets("minilm/tokenizer.json")).to.deep.equal([]);
  });

  it("follows the listing past its first page", async () => {
    const pad: Record<string, string> = {};
    for (let i = 0; i < 1001; i++) pad[`minilm/pad/${String(i).padStart(4, "0")}`] = "x";
    await s3.put(BUCKET, pad);
    await call(t.client, "updateModel", { name: "minilm", model: modelSpec({ source: `s3://${BUCKET}/minilm`, revision: "", credentialAlias: "store", include: ["*.json", "pad/1000"] }) });
    const events = await pullOk(t.client, { name: "minilm" });
    expect(events.at(-1)!.completed!.manifest!.files.map((f) => f.path)).to.include("pad/1000");
    expect(s3.requests.filter((r) => r.query.includes("continuation-token")).length).to.be.above(0);
  });

  it("asks the checksums of many objects at once without Node's listener-leak warning", async () => {
    const many: Record<string, string> = {};
    for (let i = 0; i < 12; i++) many[`minilm/shards/${String(i).padStart(2, "0")}.json`] = `{"shard": ${i}}`;
    await s3.put(BUCKET, many);
    const warnings: Error[] = [];
    const warned = (warning: Error) => warnings.push(warning);
    process.on("warning", warned);
    try {
      await pullOk(t.client, { name: "minilm" });
    } finally {
      process.off("warning", warned);
    }
    expect(s3.requests.filter((r) => r.method === "HEAD").length, "a HEAD for each object").to.be.at.least(12);
    expect(warnings.map((w) => w.name)).to.not.include("MaxListenersExceededWarning");
  });

  it("resumes an object whose connection dropped midway, fetching only the missing bytes", async () => {
    await call(t.client, "updateModel", { name: "minilm", model: modelSpec({ source: `s3://${BUCKET}/minilm`, revision: "", credentialAlias: "store", include: ["onnx/"] }) });
    s3.faults.dropAfter.set("minilm/onnx/model.onnx", 1024 * 1024);
    await pullOk(t.client, { name: "minilm" });
    const gets = s3.gets("minilm/onnx/model.onnx");
    expect(gets).to.have.length(2);
    const resumedAt = Number(/^bytes=(\d+)-$/.exec(gets[1]!.range ?? "")?.[1]);
    expect(resumedAt).to.be.above(0);
    expect(gets[1]!.sent).to.equal(BIG - resumedAt);
    expect(sha256hex(await installed("onnx/model.onnx"))).to.equal(sha256hex(big));
  });

  it("retries 503 SlowDown and goes on", async () => {
    s3.faults.slowDown.set("minilm/config.json", 2);
    await pullOk(t.client, { name: "minilm" });
    expect(s3.requests.filter((r) => r.key === "minilm/config.json").length).to.be.above(3);
  });

  it("fails with DATA_LOSS naming the file when the bytes differ from the announced SHA-256", async () => {
    s3.faults.checksum.set("minilm/config.json", sha256hex(OBJECTS["minilm/config.json"]!));
    s3.faults.corrupt.add("minilm/config.json");
    const outcome = await pull(t.client, { name: "minilm" });
    expect(outcome.error?.code).to.equal(status.DATA_LOSS);
    expect(outcome.error?.details).to.include("config.json");
  });

  it("fetches large objects with a full-object SHA-256 as byte ranges, and links content the store holds without downloading", async () => {
    s3.faults.checksum.set("minilm/onnx/model.onnx", sha256hex(big));
    await pullOk(t.client, { name: "minilm" });
    expect(s3.gets("minilm/onnx/model.onnx").every((r) => /^bytes=\d+-\d+$/.test(r.range ?? ""))).to.equal(true);
    await call(t.client, "registerModel", { model: modelSpec({ name: "copy", source: `s3://${BUCKET}/minilm`, revision: "", credentialAlias: "store", include: ["onnx/"] }) });
    const before = s3.gets("minilm/onnx/model.onnx").length;
    const events = await pullOk(t.client, { name: "copy" });
    expect(events.find((e) => e.fileCompleted)!.fileCompleted!.reused).to.equal(true);
    expect(s3.gets("minilm/onnx/model.onnx").length).to.equal(before);
  });

  it("names the credential alias, never the secret, when the store refuses the credentials", async () => {
    const logs = captureLogs("trace");
    await t.restart({ logger: logs.logger });
    const secret = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY";
    await call(t.client, "putSecret", { alias: "store", value: JSON.stringify({ accessKeyId: "NOBODY", secretAccessKey: secret }) });
    const outcome = await pull(t.client, { name: "minilm" });
    expect([status.PERMISSION_DENIED, status.UNAUTHENTICATED]).to.include(outcome.error?.code);
    expect(outcome.error?.details).to.include("'store'").and.not.include(secret);
    expect(logs.raw()).to.include("'store'").and.not.include(secret).and.not.include("NOBODY");
  });

  it("refuses a secret that is not S3 credentials with FAILED_PRECONDITION naming the alias", async () => {
    await call(t.client, "putSecret", { alias: "store", value: "hf_not-json-token" });
    const outcome = await pull(t.client, { name: "minilm" });
    expect(outcome.error?.code).to.equal(status.FAILED_PRECONDITION);
    expect(outcome.error?.details).to.include("'store'").and.not.include("hf_not-json-token");
  });

  it("pulls a public bucket anonymously, without a credential alias", async () => {
    await call(t.client, "updateModel", { name: "minilm", model: modelSpec({ source: `s3://${BUCKET}/minilm`, revision: "", include: ["*.json"] }) });
    await pullOk(t.client, { name: "minilm" });
    expect(s3.requests.length).to.be.above(0);
  });

  it("never mixes an object that changed during the pull with its listed version: the pull is ABORTED, the next one installs the new version", async () => {
    s3.faults.beforeGet.set("minilm/config.json", () => s3.put(BUCKET, { "minilm/config.json": '{"hidden_size": 768}' }));
    const outcome = await pull(t.client, { name: "minilm" });
    expect(outcome.error?.code).to.equal(status.ABORTED);
    expect(outcome.error?.details).to.include("config.json").and.include("pull again");
    await pullOk(t.client, { name: "minilm" });
    expect((await installed("config.json")).toString()).to.equal('{"hidden_size": 768}');
  });

  it("never links content by the checksum of an object overwritten between listing and HEAD: the pull is ABORTED", async () => {
    const changed = '{"hidden_size": 768}';
    await s3.put(BUCKET, { "other/config.json": changed });
    await call(t.client, "registerModel", { model: modelSpec({ name: "other", source: `s3://${BUCKET}/other`, revision: "", credentialAlias: "store" }) });
    await pullOk(t.client, { name: "other" });
    // the store holds the new content; HEAD announces its checksum once the object is overwritten
    s3.faults.checksum.set("minilm/config.json", sha256hex(changed));
    s3.faults.beforeHead.set("minilm/config.json", () => s3.put(BUCKET, { "minilm/config.json": changed }));
    const outcome = await pull(t.client, { name: "minilm" });
    expect(outcome.error?.code).to.equal(status.ABORTED);
    expect(outcome.error?.details).to.include("config.json").and.include("pull again");
    const model = (await call(t.client, "getModel", { name: "minilm" })).model!;
    expect(model.cacheSizeBytes).to.equal(0);
  });

  it("with force fetches every object again, compares each with its stored copy, and writes none that still match", async () => {
    await pullOk(t.client, { name: "minilm" });
    const listed = sha256hex(big);
    const blob = join(t.cacheRoot, ".blobs", "sha256", listed);
    const before = await stat(blob);
    const gets = s3.gets("minilm/onnx/model.onnx").length;
    await pullOk(t.client, { name: "minilm", force: true });
    expect(s3.gets("minilm/onnx/model.onnx").length, "fetched again").to.be.above(gets);
    const after = await stat(blob);
    expect([after.ino, after.mtimeMs]).to.deep.equal([before.ino, before.mtimeMs]);
    expect(await installed("onnx/model.onnx")).to.deep.equal(big);
  });

  it("changes resolved_commit when an object changes", async () => {
    const first = (await pullOk(t.client, { name: "minilm" })).at(-1)!.completed!.manifest!.resolvedCommit;
    await s3.put(BUCKET, { "minilm/config.json": '{"hidden_size": 768}' });
    const second = (await pullOk(t.client, { name: "minilm", force: true })).at(-1)!.completed!.manifest!.resolvedCommit;
    expect(second).to.not.equal(first);
    expect((await installed("config.json")).toString()).to.equal('{"hidden_size": 768}');
  });

  it("refuses a key that is not a safe relative path before fetching anything", async () => {
    await s3.put(BUCKET, { "minilm/onnx\\..\\escape.json": "x" });
    const outcome = await pull(t.client, { name: "minilm" });
    expect(outcome.error?.code).to.equal(status.FAILED_PRECONDITION);
    expect(outcome.error?.details).to.include("escape.json");
    expect(s3.requests.filter((r) => r.method !== "GET" || r.key !== "")).to.deep.equal([]);
  });

  it("refuses an S3 pull on an offline server with FAILED_PRECONDITION naming the object store", async () => {
    await t.restart({ offline: true });
    const outcome = await pull(t.client, { name: "minilm" });
    expect(outcome.error?.code).to.equal(status.FAILED_PRECONDITION);
    expect(outcome.error?.details).to.include("offline").and.include("object store");
    expect(s3.requests).to.deep.equal([]);
  });

  it("accepts an empty revision for an s3:// source only", async () => {
    const err = await callError(t.client, "registerModel", { model: modelSpec({ name: "hub", revision: "" }) });
    expect(err.code).to.equal(status.INVALID_ARGUMENT);
  });
});

describe("revalidating an S3 source", () => {
  let s3: FakeS3;
  let t: TestServer;
  const SMALL = { "m/config.json": '{"hidden_size": 384}', "m/tokenizer.json": "{}", "m/model.onnx": "weights" };
  const objectReads = () => s3.requests.filter((r) => (r.method === "GET" || r.method === "HEAD") && r.key.startsWith("m/"));
  beforeEach(async () => {
    s3 = await FakeS3.start([BUCKET]);
    await s3.put(BUCKET, SMALL);
  });
  afterEach(async () => {
    await t?.close();
    await s3.close();
  });

  it("ResolveModel ALWAYS lists once and answers revalidated, not pulled, while the listing is unchanged; a changed object is pulled", async () => {
    t = await startTestServer({ offline: false, s3Endpoint: s3.url, progressIntervalMs: 0 });
    await call(t.client, "registerModel", { model: modelSpec({ source: `s3://${BUCKET}/m`, revision: "" }) });
    const always = { name: "minilm", pullPolicy: PullPolicy.PULL_POLICY_ALWAYS, leaseSeconds: 0, credentialAlias: "" };
    const first = await call(t.client, "resolveModel", always);
    expect([first.pulled, first.revalidated]).to.deep.equal([true, true]);
    const before = s3.requests.length;
    const again = await call(t.client, "resolveModel", always);
    expect([again.pulled, again.revalidated]).to.deep.equal([false, true]);
    expect(again.manifest!.resolvedCommit).to.equal(first.manifest!.resolvedCommit);
    // one listing, no HEAD or GET of an object
    expect(s3.requests.slice(before).map((r) => [r.method, r.key])).to.deep.equal([["GET", ""]]);
    await s3.put(BUCKET, { "m/config.json": '{"hidden_size": 768}' });
    const changed = await call(t.client, "resolveModel", always);
    expect([changed.pulled, changed.revalidated]).to.deep.equal([true, true]);
    expect(changed.manifest!.resolvedCommit).to.not.equal(first.manifest!.resolvedCommit);
    expect((await readFile(join(changed.cacheDir, "config.json"))).toString()).to.equal('{"hidden_size": 768}');
  });

  it("ResolveModel ALWAYS on an offline server answers the S3 install there as not revalidated, without a request", async () => {
    t = await startTestServer({ offline: false, s3Endpoint: s3.url, progressIntervalMs: 0 });
    await call(t.client, "registerModel", { model: modelSpec({ source: `s3://${BUCKET}/m`, revision: "" }) });
    await pullOk(t.client, { name: "minilm" });
    await t.restart({ offline: true, s3Endpoint: s3.url });
    const before = s3.requests.length;
    const resolved = await call(t.client, "resolveModel", { name: "minilm", pullPolicy: PullPolicy.PULL_POLICY_ALWAYS, leaseSeconds: 0, credentialAlias: "" });
    expect([resolved.pulled, resolved.revalidated]).to.deep.equal([false, false]);
    expect(s3.requests.length).to.equal(before);
  });

  it("links objects without a SHA-256 checksum that the store holds (same key, ETag and size) instead of downloading them again", async () => {
    t = await startTestServer({ offline: false, s3Endpoint: s3.url, progressIntervalMs: 0 });
    await call(t.client, "registerModel", { model: modelSpec({ source: `s3://${BUCKET}/m`, revision: "" }) });
    await pullOk(t.client, { name: "minilm" });
    for (const key of Object.keys(SMALL)) expect(s3.gets(key)).to.have.length(1);
    await call(t.client, "registerModel", { model: modelSpec({ name: "copy", source: `s3://${BUCKET}/m`, revision: "" }) });
    const events = await pullOk(t.client, { name: "copy" });
    expect(events[0]!.started!.reusedBytes).to.equal(events[0]!.started!.totalBytes);
    expect(events.filter((e) => e.fileCompleted).map((e) => e.fileCompleted!.reused)).to.deep.equal([true, true, true]);
    for (const key of Object.keys(SMALL)) expect(s3.gets(key)).to.have.length(1);
    // a new version of an object is downloaded, never taken for the old one
    await s3.put(BUCKET, { "m/config.json": '{"hidden_size": 768}' });
    await pullOk(t.client, { name: "copy" });
    expect(s3.gets("m/config.json")).to.have.length(2);
    expect((await readFile(join(t.cacheRoot, "copy", "config.json"))).toString()).to.equal('{"hidden_size": 768}');
  });

  it("the models file's ALWAYS model is revalidated at each apply, not pulled again while its listing is unchanged", async () => {
    const dir = await mkdtemp(join(tmpdir(), "modelcache-models-"));
    const path = join(dir, "models.yaml");
    try {
      await writeFile(path, `models:\n  - name: minilm\n    source: s3://${BUCKET}/m\n    revision: ""\n    task: embedding\n    dimensions: 384\n    pull_policy: always\n`);
      t = await startTestServer({ offline: false, s3Endpoint: s3.url, progressIntervalMs: 0, modelsFile: path });
      const server = t;
      const settled = async () => {
        for (const deadline = Date.now() + 20_000; server.server.modelsFile!.backgroundPulls > 0 || (await call(server.client, "getModel", { name: "minilm" })).model!.cacheSizeBytes === 0; ) {
          if (Date.now() > deadline) throw new Error("the background pull did not end");
          await new Promise((r) => setTimeout(r, 50));
        }
      };
      await settled();
      const before = objectReads().length;
      const lists = () => s3.requests.filter((r) => r.key === "").length;
      const listsBefore = lists();
      await server.server.modelsFile!.reload();
      await settled();
      expect(lists()).to.be.above(listsBefore);
      expect(objectReads().length).to.equal(before);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("S3 credentials without a credential alias", () => {
  let s3: FakeS3;
  let t: TestServer;
  let dir: string;
  const VARS = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "AWS_PROFILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_EC2_METADATA_DISABLED",
  ] as const;
  const saved: Partial<Record<string, string>> = {};
  beforeEach(async () => {
    for (const name of VARS) {
      saved[name] = process.env[name];
      delete process.env[name];
    }
    dir = await mkdtemp(join(tmpdir(), "modelcache-aws-"));
    // never the machine's own ~/.aws files or instance role
    process.env.AWS_EC2_METADATA_DISABLED = "true";
    process.env.AWS_CONFIG_FILE = join(dir, "config");
    process.env.AWS_SHARED_CREDENTIALS_FILE = join(dir, "credentials");
    s3 = await FakeS3.start([BUCKET]);
    await s3.put(BUCKET, { "m/config.json": "{}" });
    t = await startTestServer({ offline: false, s3Endpoint: s3.url, progressIntervalMs: 0 });
    await call(t.client, "registerModel", { model: modelSpec({ source: `s3://${BUCKET}/m`, revision: "" }) });
  });
  afterEach(async () => {
    await t.close();
    await s3.close();
    await rm(dir, { recursive: true, force: true });
    for (const name of VARS) {
      if (saved[name] === undefined) delete process.env[name];
      else process.env[name] = saved[name];
    }
  });

  /** A credentials file the chain reads from now on (the SDK keeps a file it read once: each test names a new one). */
  async function credentialsFile(contents: string): Promise<string> {
    const path = join(dir, `credentials-${Math.random().toString(36).slice(2)}`);
    await writeFile(path, contents);
    process.env.AWS_SHARED_CREDENTIALS_FILE = path;
    return path;
  }

  it("signs with the shared credentials file the AWS default chain finds", async () => {
    await credentialsFile(`[default]\naws_access_key_id = ${S3_CREDENTIALS.accessKeyId}\naws_secret_access_key = ${S3_CREDENTIALS.secretAccessKey}\n`);
    await pullOk(t.client, { name: "minilm" });
    expect(s3.requests.length).to.be.above(0);
    expect(s3.requests.every((r) => r.signed)).to.equal(true);
  });

  it("names where the chain found credentials the store refuses: the profile and its files, or the environment variables", async () => {
    const file = await credentialsFile("[default]\naws_access_key_id = NOBODY\naws_secret_access_key = wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY\n");
    let outcome = await pull(t.client, { name: "minilm" });
    expect([status.PERMISSION_DENIED, status.UNAUTHENTICATED]).to.include(outcome.error?.code);
    expect(outcome.error?.details).to.include("profile 'default'").and.include(file).and.include("credential_alias").and.not.include("wJalrXUtnFEMI");
    process.env.AWS_ACCESS_KEY_ID = "NOBODY";
    process.env.AWS_SECRET_ACCESS_KEY = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY";
    outcome = await pull(t.client, { name: "minilm" });
    expect(outcome.error?.details).to.include("AWS_ACCESS_KEY_ID").and.not.include("wJalrXUtnFEMI");
  });

  it("goes unsigned, for a public bucket, when the chain finds no credentials", async () => {
    await pullOk(t.client, { name: "minilm" });
    expect(s3.requests.length).to.be.above(0);
    expect(s3.requests.some((r) => r.signed)).to.equal(false);
  });
});

describe("AWS_ENDPOINT_URL", () => {
  it("points the server's s3:// sources at an S3-compatible store when --s3-endpoint is not given", async () => {
    const s3 = await FakeS3.start([BUCKET]);
    const dataDir = await mkdtemp(join(tmpdir(), "modelcache-test-"));
    const saved = process.env.AWS_ENDPOINT_URL;
    process.env.AWS_ENDPOINT_URL = s3.url;
    const server = await spawnServer({ dataDir }).finally(() => {
      if (saved === undefined) delete process.env.AWS_ENDPOINT_URL;
      else process.env.AWS_ENDPOINT_URL = saved;
    });
    try {
      await s3.put(BUCKET, { "m/config.json": "{}" });
      await call(server.client, "registerModel", { model: modelSpec({ source: `s3://${BUCKET}/m`, revision: "" }) });
      const events = await pullOk(server.client, { name: "minilm" });
      expect(events.at(-1)!.completed!.manifest!.files.map((f) => f.path)).to.deep.equal(["config.json"]);
      expect(s3.gets("m/config.json")).to.have.length(1);
    } finally {
      server.client.close();
      await server.kill();
      await s3.close();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
