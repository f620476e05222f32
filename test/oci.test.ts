import { randomBytes } from "node:crypto";
import { mkdir, readFile, readdir, stat, utimes, writeFile } from "node:fs/promises";
import { type AddressInfo } from "node:net";
import { createServer } from "node:http";
import { gzipSync } from "node:zlib";
import { pack } from "tar-stream";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import { expect } from "chai";
import { CacheStatus, ModelStatus, PullPolicy } from "../generated/modelcache/v1/model_cache.js";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { spawnServer } from "./support/child-server.js";
import { FakeHub } from "./support/fake-hub.js";
import { ForwardProxy } from "./support/forward-proxy.js";
import { captureLogs } from "./support/log-capture.js";
import { OciFaultProxy, holdPoint } from "./support/oci-fault-proxy.js";
import { OciRegistry, htpasswdLine, registryAvailable, sha256 } from "./support/oci-registry.js";
import { makeSourceDir, patternedBytes } from "./support/source-dir.js";
import type { ServerOptions } from "../src/server/start-server.js";
import { FIXTURE_DIR, type TestServer, call, callError, kindOf, modelSpec, pull, pullOk, startTestServer } from "./support/test-server.js";

const FILES = { "config.json": '{"hidden_size": 384}', "onnx/model.onnx": Buffer.alloc(200_000, 7), "tokenizer.json": "{}" };
const REPO = "models/minilm";
const suffix = registryAvailable ? "" : " (skipped: /usr/bin/docker-registry is missing; install Debian's docker-registry)";

/** A ModelPack manifest of `layers` with `config` (pushed) as its config. */
function modelPackManifest(config: { digest: string; size: number }, layers: object[]): object {
  return {
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    artifactType: "application/vnd.cncf.model.manifest.v1+json",
    config: { mediaType: "application/vnd.cncf.model.config.v1+json", ...config },
    layers,
  };
}

/**
 * The hooks of a suite that needs the registry: skipped without it; before
 * each test a fresh registry (behind a fault proxy the test controls, with
 * `faultProxy`, or behind a front that issues Bearer tokens for `login`,
 * with `tokens`) and a server that reaches it over plain HTTP (through a
 * forward proxy, with `forwardProxy`); all closed after. `available: false`
 * skips it too (something else it needs is missing).
 */
function registrySuite(
  options: { available?: boolean; faultProxy?: boolean; tokens?: boolean; forwardProxy?: boolean; registry?: Parameters<typeof OciRegistry.start>[0]; server?: Partial<ServerOptions> } = {},
) {
  const suite = {} as { registry: OciRegistry; proxy: OciFaultProxy; front: Awaited<ReturnType<typeof tokenRegistry>>; forward: ForwardProxy; t: TestServer };
  const available = registryAvailable && options.available !== false;
  before(function () {
    if (!available) this.skip();
  });
  beforeEach(async () => {
    if (!available) return;
    suite.registry = await OciRegistry.start(options.registry);
    if (options.faultProxy) suite.proxy = await OciFaultProxy.start(suite.registry.address);
    if (options.tokens) suite.front = await tokenRegistry(suite.registry, login);
    if (options.forwardProxy) suite.forward = await ForwardProxy.start();
    const address = options.faultProxy ? suite.proxy.address : options.tokens ? suite.front.address : suite.registry.address;
    suite.t = await startTestServer({ offline: false, ociPlainHttp: [address], progressIntervalMs: 0, ...(options.forwardProxy && { proxy: suite.forward.url }), ...options.server });
  });
  afterEach(async () => {
    await suite.t?.close();
    await suite.forward?.close();
    await suite.proxy?.close();
    await suite.front?.close();
    await suite.registry?.close();
  });
  return suite;
}

describe(`pulling from an OCI registry (the CNCF distribution registry)${suffix}`, function () {
  let registry: OciRegistry;
  let t: TestServer;
  const source = () => `oci://${registry.address}/${REPO}`;
  const suite = registrySuite({});
  beforeEach(() => ({ registry, t } = suite));

  it("installs a ModelPack artifact byte-identical, with the manifest digest as resolved_commit and PullStarted.source", async () => {
    const digest = await registry.pushModelPack(REPO, "v1", FILES);
    await call(t.client, "registerModel", { model: modelSpec({ source: source(), revision: "v1" }) });
    const events = await pullOk(t.client, { name: "minilm" });
    const manifest = events.at(-1)!.completed!.manifest!;
    expect(manifest.resolvedCommit).to.equal(digest);
    expect(events[0]!.started!.source).to.equal(`oci:${registry.address}/${REPO}@${digest}`);
    expect(manifest.files.map((f) => f.path)).to.deep.equal(["config.json", "onnx/model.onnx", "tokenizer.json"]);
    for (const [path, data] of Object.entries(FILES)) expect(await readFile(join(t.cacheRoot, "minilm", path))).to.deep.equal(Buffer.from(data));
  });

  it("pulls by digest revision, reads the older cnai annotation, and applies include/exclude to the layer paths", async () => {
    const digest = await registry.pushModelPack(REPO, "v1", FILES, "org.cnai.model.filepath");
    await call(t.client, "registerModel", { model: modelSpec({ source: source(), revision: digest, exclude: ["onnx/"] }) });
    const events = await pullOk(t.client, { name: "minilm" });
    expect(events.at(-1)!.completed!.manifest!.files.map((f) => f.path)).to.deep.equal(["config.json", "tokenizer.json"]);
    expect(registry.blobGets(`sha256:${sha256(FILES["onnx/model.onnx"])}`)).to.equal(0);
  });

  it("holds only the layers that pass the model's filters to the pull's limits", async () => {
    await t.restart({ offline: false, ociPlainHttp: [registry.address], progressIntervalMs: 0, pullLimits: { maxFiles: 2, maxFileBytes: 100_000, maxTotalBytes: 1024 * 1024 } });
    await registry.pushModelPack(REPO, "v1", FILES);
    await call(t.client, "registerModel", { model: modelSpec({ source: source(), revision: "v1", exclude: ["onnx/"] }) });
    const events = await pullOk(t.client, { name: "minilm" });
    expect(events.at(-1)!.completed!.manifest!.files.map((f) => f.path)).to.deep.equal(["config.json", "tokenizer.json"]);
  });

  it("links a layer the store already holds by its digest without downloading it", async () => {
    await registry.pushModelPack(REPO, "v1", FILES);
    await registry.pushModelPack("models/other", "v1", { "weights.onnx": FILES["onnx/model.onnx"] });
    await call(t.client, "registerModel", { model: modelSpec({ source: source(), revision: "v1" }) });
    await pullOk(t.client, { name: "minilm" });
    const layer = `sha256:${sha256(FILES["onnx/model.onnx"])}`;
    const before = registry.blobGets(layer);
    expect(before).to.be.above(0);
    await call(t.client, "registerModel", { model: modelSpec({ name: "other", source: `oci://${registry.address}/models/other`, revision: "v1" }) });
    const events = await pullOk(t.client, { name: "other" });
    expect(events.at(-1)!.completed!.reusedBytes).to.equal(FILES["onnx/model.onnx"].length);
    expect(registry.blobGets(layer)).to.equal(before);
  });

  it("refuses a layer whose bytes do not match its digest with DATA_LOSS naming the layer", async () => {
    await registry.pushModelPack(REPO, "v1", FILES);
    const layer = `sha256:${sha256("{}")}`;
    await writeFile(registry.blobPath(layer), "[]");
    await call(t.client, "registerModel", { model: modelSpec({ source: source(), revision: "v1" }) });
    const outcome = await pull(t.client, { name: "minilm" });
    expect(outcome.error?.code).to.equal(status.DATA_LOSS);
    expect(outcome.error?.details).to.include(layer).and.include("tokenizer.json");
  });

  it("answers NOT_FOUND for a digest revision the registry does not hold", async () => {
    const wrong = `sha256:${"0".repeat(64)}`;
    await registry.pushModelPack(REPO, "v1", FILES);
    await call(t.client, "registerModel", { model: modelSpec({ source: source(), revision: wrong }) });
    const outcome = await pull(t.client, { name: "minilm" });
    // the registry knows no manifest of that digest
    expect(outcome.error?.code).to.equal(status.NOT_FOUND);
  });

  it("refuses a plain container image with FAILED_PRECONDITION naming its media type", async () => {
    const config = await registry.pushBlob(REPO, JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [] } }));
    const layer = await registry.pushBlob(REPO, Buffer.from("not really a tar"));
    await registry.pushManifest(REPO, "image", {
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: { mediaType: "application/vnd.oci.image.config.v1+json", ...config },
      layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", ...layer }],
    });
    await call(t.client, "registerModel", { model: modelSpec({ source: source(), revision: "image" }) });
    const outcome = await pull(t.client, { name: "minilm" });
    expect(outcome.error?.code).to.equal(status.FAILED_PRECONDITION);
    expect(outcome.error?.details).to.include("application/vnd.oci.image.config.v1+json");
  });

  it("refuses a layer whose annotated path escapes the install, and installs nothing", async () => {
    await registry.pushModelPack(REPO, "v1", { "../escape.json": "{}" });
    await call(t.client, "registerModel", { model: modelSpec({ source: source(), revision: "v1" }) });
    const outcome = await pull(t.client, { name: "minilm" });
    expect(outcome.error?.code).to.equal(status.INVALID_ARGUMENT);
    expect(outcome.error?.details).to.include("../escape.json");
  });

  it("ResolveModel ALWAYS revalidates an unchanged tag without pulling, and pulls a moved tag", async () => {
    await registry.pushModelPack(REPO, "v1", FILES);
    await call(t.client, "registerModel", { model: modelSpec({ source: source(), revision: "v1" }) });
    const always = { name: "minilm", pullPolicy: PullPolicy.PULL_POLICY_ALWAYS, leaseSeconds: 0, credentialAlias: "" };
    const first = await call(t.client, "resolveModel", always);
    expect(first.pulled).to.equal(true);
    const again = await call(t.client, "resolveModel", always);
    expect([again.pulled, again.revalidated]).to.deep.equal([false, true]);
    const moved = await registry.pushModelPack(REPO, "v1", { ...FILES, "config.json": '{"hidden_size": 768}' });
    const changed = await call(t.client, "resolveModel", always);
    expect([changed.pulled, changed.revalidated]).to.deep.equal([true, true]);
    const got = await call(t.client, "getModel", { name: "minilm" });
    expect(got.model?.resolvedCommit).to.equal(moved);
  });

  it("refuses malformed oci:// sources and revisions at registration, naming the field", async () => {
    let err = await callError(t.client, "registerModel", { model: modelSpec({ source: "oci://Registry Host/x", revision: "v1" }) });
    expect([err.code, err.details]).to.satisfy(([code, details]: [number, string]) => code === status.INVALID_ARGUMENT && details.includes("model.source"));
    err = await callError(t.client, "registerModel", { model: modelSpec({ source: source(), revision: "sha256:abc" }) });
    expect(err.code).to.equal(status.INVALID_ARGUMENT);
    expect(err.details).to.include("model.revision");
  });
});

const login = { user: "puller", password: "s3cret-Passw0rd" };
const line = registryAvailable ? htpasswdLine(login.user, login.password) : undefined;

describe(`pulling from an OCI registry with htpasswd auth${registryAvailable ? (line ? "" : " (skipped: no bcrypt available to write an htpasswd line)") : suffix}`, function () {
  let registry: OciRegistry;
  let t: TestServer;
  const suite = registrySuite({ available: line !== undefined, registry: { htpasswd: { ...login, line: line! } } });
  beforeEach(() => ({ registry, t } = suite));

  it("pulls with Basic auth from the credential alias's username and password, and says UNAUTHENTICATED without it, never showing the secret", async () => {
    const digest = await registry.pushModelPack(REPO, "v1", FILES);
    await call(t.client, "registerModel", { model: modelSpec({ source: `oci://${registry.address}/${REPO}`, revision: "v1" }) });
    const refused = await pull(t.client, { name: "minilm" });
    expect(refused.error?.code).to.equal(status.UNAUTHENTICATED);
    await call(t.client, "putSecret", { alias: "registry", value: JSON.stringify({ username: login.user, password: "wrong" }) });
    const wrong = await pull(t.client, { name: "minilm", credentialAlias: "registry" });
    expect(wrong.error?.code).to.equal(status.UNAUTHENTICATED);
    expect(wrong.error?.details).to.include("registry").and.not.include("wrong");
    await call(t.client, "putSecret", { alias: "registry", value: JSON.stringify({ username: login.user, password: login.password }) });
    const events = await pullOk(t.client, { name: "minilm", credentialAlias: "registry" });
    expect(events.at(-1)!.completed!.manifest!.resolvedCommit).to.equal(digest);
  });
});

/**
 * A registry that issues tokens, of the test's own: it answers 401 with a
 * Bearer challenge until a request carries the token its realm gave for the
 * alias's login, then proxies to the distribution registry; blobs redirect
 * to a blob host on another origin, which records any Authorization it gets.
 */
async function tokenRegistry(upstream: OciRegistry, login: { user: string; password: string }) {
  const token = "tok-" + sha256(String(Math.random())).slice(0, 16);
  const seen = { tokenRequests: [] as string[], blobHostAuthorization: [] as (string | undefined)[] };
  const blobHost = createServer(async (req, res) => {
    seen.blobHostAuthorization.push(req.headers.authorization);
    const upstreamResponse = await fetch(`http://${upstream.address}${req.url}`, { headers: req.headers.range ? { range: req.headers.range } : {} });
    res.writeHead(upstreamResponse.status, Object.fromEntries(upstreamResponse.headers));
    res.end(Buffer.from(await upstreamResponse.arrayBuffer()));
  });
  await new Promise<void>((resolve) => blobHost.listen(0, "127.0.0.1", resolve));
  const blobOrigin = `http://127.0.0.1:${(blobHost.address() as AddressInfo).port}`;
  const front = createServer(async (req, res) => {
    const url = new URL(req.url!, "http://front");
    if (url.pathname === "/token") {
      seen.tokenRequests.push(url.search);
      const basic = `Basic ${Buffer.from(`${login.user}:${login.password}`).toString("base64")}`;
      if (req.headers.authorization !== basic) return void res.writeHead(401).end();
      return void res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ token }));
    }
    if (req.headers.authorization !== `Bearer ${token}`) {
      const address = front.address() as AddressInfo;
      res.writeHead(401, { "www-authenticate": `Bearer realm="http://127.0.0.1:${address.port}/token",service="test-registry",scope="repository:${REPO}:pull"` });
      return void res.end();
    }
    if (url.pathname.includes("/blobs/")) return void res.writeHead(307, { location: `${blobOrigin}${req.url}` }).end();
    const upstreamResponse = await fetch(`http://${upstream.address}${req.url}`, { method: req.method, headers: { accept: String(req.headers.accept ?? "") } });
    res.writeHead(upstreamResponse.status, Object.fromEntries(upstreamResponse.headers));
    res.end(Buffer.from(await upstreamResponse.arrayBuffer()));
  });
  await new Promise<void>((resolve) => front.listen(0, "127.0.0.1", resolve));
  return {
    address: `127.0.0.1:${(front.address() as AddressInfo).port}`,
    token,
    seen,
    close: async () => {
      front.closeAllConnections();
      blobHost.closeAllConnections();
      await Promise.all([new Promise((resolve) => front.close(resolve)), new Promise((resolve) => blobHost.close(resolve))]);
    },
  };
}

describe(`pulling from an OCI registry that issues Bearer tokens${suffix}`, function () {
  let registry: OciRegistry;
  let front: Awaited<ReturnType<typeof tokenRegistry>>;
  let t: TestServer;
  const suite = registrySuite({ tokens: true });
  beforeEach(() => ({ registry, front, t } = suite));

  it("answers the Bearer challenge with a token fetched with the alias's login, sends no Authorization to the blob host a blob redirects to, and shows no secret", async () => {
    const logs = captureLogs("trace");
    await t.restart({ logger: logs.logger, offline: false, ociPlainHttp: [front.address], progressIntervalMs: 0 });
    const digest = await registry.pushModelPack(REPO, "v1", FILES);
    await call(t.client, "putSecret", { alias: "registry", value: JSON.stringify({ username: login.user, password: login.password }) });
    await call(t.client, "registerModel", { model: modelSpec({ source: `oci://${front.address}/${REPO}`, revision: "v1", credentialAlias: "registry" }) });
    const events = await pullOk(t.client, { name: "minilm" });
    expect(events.at(-1)!.completed!.manifest!.resolvedCommit).to.equal(digest);
    for (const [path, data] of Object.entries(FILES)) expect(await readFile(join(t.cacheRoot, "minilm", path))).to.deep.equal(Buffer.from(data));
    expect(front.seen.tokenRequests[0]).to.include("service=test-registry").and.include("scope=repository");
    expect(front.seen.blobHostAuthorization.length).to.be.above(0);
    expect(front.seen.blobHostAuthorization.every((value) => value === undefined)).to.equal(true);
    const text = JSON.stringify(events);
    expect(text).to.not.include(login.password).and.not.include(front.token);
    expect(logs.raw()).to.not.include(login.password).and.not.include(front.token);
    expect(logs.raw()).to.include("minilm");
  });
});

describe(`pulling from an OCI registry through --proxy${suffix}`, function () {
  let registry: OciRegistry;
  let front: Awaited<ReturnType<typeof tokenRegistry>>;
  let proxy: ForwardProxy;
  let t: TestServer;
  const suite = registrySuite({ tokens: true, forwardProxy: true });
  beforeEach(() => ({ registry, front, forward: proxy, t } = suite));

  it("sends the token, manifest and blob requests through the proxy, and no Authorization to the blob host a blob redirects to", async () => {
    const digest = await registry.pushModelPack(REPO, "v1", FILES);
    await call(t.client, "putSecret", { alias: "registry", value: JSON.stringify({ username: login.user, password: login.password }) });
    await call(t.client, "registerModel", { model: modelSpec({ source: `oci://${front.address}/${REPO}`, revision: "v1", credentialAlias: "registry" }) });
    await pullOk(t.client, { name: "minilm" });
    expect(await readFile(join(t.cacheRoot, "minilm", "onnx/model.onnx"))).to.deep.equal(FILES["onnx/model.onnx"]);
    const through = proxy.requests.filter((r) => r.kind === "absolute");
    const toFront = through.filter((r) => r.host === front.address);
    expect(toFront.some((r) => r.path!.startsWith("/token"))).to.equal(true);
    expect(toFront.some((r) => r.path === `/v2/${REPO}/manifests/v1` && r.authorization)).to.equal(true);
    expect(toFront.filter((r) => r.path!.includes("/blobs/sha256:")).length).to.be.at.least(Object.keys(FILES).length);
    // the blobs themselves came from the blob host, through the proxy too, and without the registry's Authorization
    const toBlobHost = through.filter((r) => r.host !== front.address);
    expect(toBlobHost.length).to.be.at.least(Object.keys(FILES).length);
    expect(toBlobHost.every((r) => r.path!.includes("/blobs/sha256:") && r.authorization === false)).to.equal(true);
    expect(front.seen.blobHostAuthorization.every((value) => value === undefined)).to.equal(true);
    expect(digest).to.match(/^sha256:/);
  });
});

describe(`OCI registries: indexes, Docker model layers and plain HTTP${suffix}`, function () {
  let registry: OciRegistry;
  let t: TestServer;
  const suite = registrySuite({});
  beforeEach(() => ({ registry, t } = suite));

  it("installs the first model manifest of an image index, with the index's digest as resolved_commit", async () => {
    const model = await registry.pushModelPack(REPO, "model-only", FILES);
    const modelSize = (await fetch(`http://${registry.address}/v2/${REPO}/manifests/${model}`, { headers: { accept: "application/vnd.oci.image.manifest.v1+json" } }).then((r) => r.arrayBuffer())).byteLength;
    const index = await registry.pushManifest(
      REPO,
      "v1",
      { schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests: [{ mediaType: "application/vnd.oci.image.manifest.v1+json", artifactType: "application/vnd.cncf.model.manifest.v1+json", digest: model, size: modelSize }] },
      "application/vnd.oci.image.index.v1+json",
    );
    await call(t.client, "registerModel", { model: modelSpec({ source: `oci://${registry.address}/${REPO}`, revision: "v1" }) });
    const events = await pullOk(t.client, { name: "minilm" });
    expect(events.at(-1)!.completed!.manifest!.resolvedCommit).to.equal(index);
    expect(events.at(-1)!.completed!.manifest!.files.map((f) => f.path)).to.deep.equal(["config.json", "onnx/model.onnx", "tokenizer.json"]);
  });

  it("refuses a Docker model layer without a path annotation with FAILED_PRECONDITION naming its media type and digest", async () => {
    const config = await registry.pushBlob(REPO, JSON.stringify({ format: "gguf" }));
    const layer = await registry.pushBlob(REPO, Buffer.from("GGUF weights"));
    await registry.pushManifest(REPO, "v1", {
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: { mediaType: "application/vnd.docker.ai.model.config.v0.1+json", ...config },
      layers: [{ mediaType: "application/vnd.docker.ai.gguf.v3", ...layer }],
    });
    await call(t.client, "registerModel", { model: modelSpec({ source: `oci://${registry.address}/${REPO}`, revision: "v1" }) });
    const outcome = await pull(t.client, { name: "minilm" });
    expect(outcome.error?.code).to.equal(status.FAILED_PRECONDITION);
    expect(outcome.error?.details).to.include("application/vnd.docker.ai.gguf.v3").and.include(layer.digest);
  });

  it("names --oci-plain-http at once when a registry expected to speak TLS answers in plain HTTP", async () => {
    await t.restart({ offline: false, ociPlainHttp: [], progressIntervalMs: 0 });
    await registry.pushModelPack(REPO, "v1", FILES);
    await call(t.client, "registerModel", { model: modelSpec({ source: `oci://${registry.address}/${REPO}`, revision: "v1" }) });
    const outcome = await pull(t.client, { name: "minilm" });
    expect(outcome.error?.code).to.equal(status.UNAVAILABLE);
    expect(outcome.error?.details).to.include("--oci-plain-http").and.include(registry.address);
  });
});

/** A tar archive of the given entries (tar-stream's packer); a string entry is a file, `{ symlink }` a link. */
async function tarOf(entries: Record<string, string | Buffer | { symlink: string } | { directory: true }>): Promise<Buffer> {
  const packer = pack();
  for (const [name, value] of Object.entries(entries)) {
    if (typeof value === "object" && "symlink" in value) packer.entry({ name, type: "symlink", linkname: value.symlink });
    else if (typeof value === "object" && "directory" in value) packer.entry({ name, type: "directory" });
    else packer.entry({ name }, Buffer.from(value as string | Buffer));
  }
  packer.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of packer) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

describe(`OCI archive layers (.tar, .tar+gzip)${suffix}`, function () {
  let registry: OciRegistry;
  let t: TestServer;
  const suite = registrySuite({});
  beforeEach(() => ({ registry, t } = suite));

  async function pushArchives(layers: { mediaType: string; data: Buffer; path: string }[]): Promise<string> {
    const config = await registry.pushBlob(REPO, "{}");
    const descriptors = [];
    for (const layer of layers) descriptors.push({ mediaType: layer.mediaType, ...(await registry.pushBlob(REPO, layer.data)), annotations: { "org.cncf.model.filepath": layer.path } });
    return registry.pushManifest(REPO, "v1", modelPackManifest(config, descriptors));
  }

  it("unpacks a modctl-style .tar layer (full paths repeated) and a .tar+gzip one (paths under the annotation) as files of the install", async () => {
    const weights = await tarOf({ "onnx/": { directory: true }, "onnx/model.onnx": FILES["onnx/model.onnx"] });
    const docs = gzipSync(await tarOf({ "README.md": "# minilm", "extra/notes.txt": "notes" }));
    await pushArchives([
      { mediaType: "application/vnd.cncf.model.weight.v1.tar", data: weights, path: "onnx" },
      { mediaType: "application/vnd.cncf.model.doc.v1.tar+gzip", data: docs, path: "docs" },
    ]);
    await call(t.client, "registerModel", { model: modelSpec({ source: `oci://${registry.address}/${REPO}`, revision: "v1" }) });
    const events = await pullOk(t.client, { name: "minilm" });
    expect(events.at(-1)!.completed!.manifest!.files.map((f) => f.path)).to.deep.equal(["docs/README.md", "docs/extra/notes.txt", "onnx/model.onnx"]);
    expect(await readFile(join(t.cacheRoot, "minilm", "onnx/model.onnx"))).to.deep.equal(FILES["onnx/model.onnx"]);
    expect(await readFile(join(t.cacheRoot, "minilm", "docs/extra/notes.txt"), "utf8")).to.equal("notes");
  });

  it("keeps an ORAS layer named only by its title as one file, and unpacks it when it carries io.deis.oras.content.unpack", async () => {
    const bundle = gzipSync(await tarOf({ "vocab.txt": "a b c" }));
    const config = await registry.pushBlob(REPO, "{}");
    const layer = await registry.pushBlob(REPO, bundle);
    const oras = (annotations: Record<string, string>) => ({ schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json", artifactType: "application/vnd.example.model", config: { mediaType: "application/vnd.oci.empty.v1+json", ...config }, layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", ...layer, annotations }] });
    await registry.pushManifest(REPO, "plain", oras({ "org.opencontainers.image.title": "bundle.tar.gz" }));
    await registry.pushManifest(REPO, "unpack", oras({ "org.opencontainers.image.title": "bundle", "io.deis.oras.content.unpack": "true" }));
    await call(t.client, "registerModel", { model: modelSpec({ source: `oci://${registry.address}/${REPO}`, revision: "plain" }) });
    let events = await pullOk(t.client, { name: "minilm" });
    expect(events.at(-1)!.completed!.manifest!.files.map((f) => f.path)).to.deep.equal(["bundle.tar.gz"]);
    expect(await readFile(join(t.cacheRoot, "minilm", "bundle.tar.gz"))).to.deep.equal(bundle);
    await call(t.client, "registerModel", { model: modelSpec({ name: "unpacked", source: `oci://${registry.address}/${REPO}`, revision: "unpack" }) });
    events = await pullOk(t.client, { name: "unpacked" });
    expect(events.at(-1)!.completed!.manifest!.files.map((f) => f.path)).to.deep.equal(["bundle/vocab.txt"]);
  });

  it("stops unpacking a compressed archive that expands past --max-pull-bytes with RESOURCE_EXHAUSTED", async () => {
    await t.restart({ offline: false, ociPlainHttp: [registry.address], progressIntervalMs: 0, pullLimits: { maxFiles: 100, maxFileBytes: 8 * 1024 * 1024, maxTotalBytes: 1024 * 1024 } });
    const bomb = gzipSync(await tarOf({ "zeros.bin": Buffer.alloc(4 * 1024 * 1024) }));
    expect(bomb.length).to.be.below(1024 * 1024);
    await pushArchives([{ mediaType: "application/vnd.cncf.model.weight.v1.tar+gzip", data: bomb, path: "model" }]);
    await call(t.client, "registerModel", { model: modelSpec({ source: `oci://${registry.address}/${REPO}`, revision: "v1" }) });
    const outcome = await pull(t.client, { name: "minilm" });
    expect(outcome.error?.code).to.equal(status.RESOURCE_EXHAUSTED);
    expect(outcome.error?.details).to.include("--max-pull-bytes");
  });

  it("refuses an archive with a link entry, or an entry escaping the install, and a .tar+zstd layer, naming them", async () => {
    await pushArchives([{ mediaType: "application/vnd.cncf.model.weight.v1.tar", data: await tarOf({ "model/link": { symlink: "/etc/passwd" } }), path: "model" }]);
    await call(t.client, "registerModel", { model: modelSpec({ source: `oci://${registry.address}/${REPO}`, revision: "v1" }) });
    let outcome = await pull(t.client, { name: "minilm" });
    expect(outcome.error?.code).to.equal(status.FAILED_PRECONDITION);
    expect(outcome.error?.details).to.include("model/link").and.include("symlink");
    await pushArchives([{ mediaType: "application/vnd.cncf.model.weight.v1.tar", data: await tarOf({ "../../escape.txt": "x" }), path: "model" }]);
    outcome = await pull(t.client, { name: "minilm" });
    expect(outcome.error?.code).to.equal(status.INVALID_ARGUMENT);
    expect(outcome.error?.details).to.include("escape.txt");
    await pushArchives([{ mediaType: "application/vnd.cncf.model.weight.v1.tar+zstd", data: Buffer.from("zstd"), path: "model" }]);
    outcome = await pull(t.client, { name: "minilm" });
    expect(outcome.error?.code).to.equal(status.FAILED_PRECONDITION);
    expect(outcome.error?.details).to.include("application/vnd.cncf.model.weight.v1.tar+zstd");
  });
});

describe(`OCI archive layers fetched inside the pull${suffix}`, function () {
  let registry: OciRegistry;
  let proxy: OciFaultProxy;
  let t: TestServer;
  const big = patternedBytes(3 * 1024 * 1024);
  const suite = registrySuite({ faultProxy: true, server: { parallelRangeMinBytes: 64 * 1024 * 1024, parallelRangeBelowBytesPerSecond: Infinity } });
  beforeEach(() => ({ registry, proxy, t } = suite));

  /** A ModelPack of one raw layer (README.md, `readmeText` or "# minilm") and one .tar layer under "model"; returns the archive's digest. */
  async function pushMixed(archive: Buffer, readmeText: string | Buffer = "# minilm"): Promise<string> {
    const config = await registry.pushBlob(REPO, "{}");
    const readme = await registry.pushBlob(REPO, readmeText);
    const layer = await registry.pushBlob(REPO, archive);
    await registry.pushManifest(REPO, "v1", modelPackManifest(config, [
      { mediaType: "application/vnd.cncf.model.doc.v1.raw", ...readme, annotations: { "org.cncf.model.filepath": "README.md" } },
      { mediaType: "application/vnd.cncf.model.weight.v1.tar", ...layer, annotations: { "org.cncf.model.filepath": "model" } },
    ]));
    return layer.digest;
  }

  it("says PullStarted before an archive layer is fetched, counting it as one file of its blob's size, then reports its transfer and its files, filtered", async () => {
    const archive = await tarOf({ "model/weights.bin": big, "model/config.json": "{}", "model/notes.txt": "x" });
    const digest = await pushMixed(archive);
    await call(t.client, "registerModel", { model: modelSpec({ source: `oci://${proxy.address}/${REPO}`, revision: "v1", exclude: ["model/notes.txt"] }) });
    const events = await pullOk(t.client, { name: "minilm" });
    expect(kindOf(events[0]!)).to.equal("started");
    expect(events[0]!.started!.fileCount).to.equal(2);
    expect(Number(events[0]!.started!.totalBytes)).to.equal("# minilm".length + archive.length);
    const layerEvents = events.filter((e) => (e.fileStarted ?? e.fileProgress ?? e.fileCompleted)?.path === digest);
    expect(layerEvents.map(kindOf)[0]).to.equal("fileStarted");
    expect(layerEvents.map(kindOf)).to.include("fileProgress");
    expect(layerEvents.at(-1)!.fileCompleted!.sha256).to.equal(digest.slice("sha256:".length));
    // the archive's files are reported after its transfer, each started and completed
    const afterLayer = events.slice(events.indexOf(layerEvents.at(-1)!));
    for (const path of ["model/config.json", "model/weights.bin"]) {
      expect(afterLayer.some((e) => e.fileStarted?.path === path)).to.equal(true, path);
      expect(afterLayer.find((e) => e.fileCompleted?.path === path)!.fileCompleted!.sha256).to.equal(sha256(path === "model/config.json" ? "{}" : big));
    }
    const manifest = events.at(-1)!.completed!.manifest!;
    expect(manifest.files.map((f) => f.path)).to.deep.equal(["README.md", "model/config.json", "model/weights.bin"]);
    expect(await readFile(join(t.cacheRoot, "minilm", "model/weights.bin"))).to.deep.equal(big);
  });

  it("numbers each transfer of the pull once: its archive layers first, then the install's files from there, in path order", async () => {
    const archive = await tarOf({ "model/weights.bin": "w", "model/config.json": "{}" });
    const digest = await pushMixed(archive);
    await call(t.client, "registerModel", { model: modelSpec({ source: `oci://${proxy.address}/${REPO}`, revision: "v1" }) });
    const events = await pullOk(t.client, { name: "minilm" });
    const started = events.filter((e) => e.fileStarted).map((e) => [e.fileStarted!.index, e.fileStarted!.path]);
    expect(started).to.deep.equal([
      [0, digest],
      [1, "README.md"],
      [2, "model/config.json"],
      [3, "model/weights.bin"],
    ]);
  });

  it("a pull cancelled once its archive is unpacked and its install is under way leaves no unpacked entries, keeps the verified blob and the previous install, and the next pull fetches nothing again", async () => {
    // one large file at a time: the held raw layer, a large file first in path order, keeps the large entry waiting in the unpacked dir
    await t.restart({ offline: false, ociPlainHttp: [proxy.address], progressIntervalMs: 0, parallelRangeMinBytes: 64 * 1024 * 1024, parallelRangeBelowBytesPerSecond: Infinity, fileConcurrency: 1 });
    const before = await registry.pushModelPack(REPO, "v1", FILES);
    await call(t.client, "registerModel", { model: modelSpec({ source: `oci://${proxy.address}/${REPO}`, revision: "v1" }) });
    await pullOk(t.client, { name: "minilm" });
    const readmeText = patternedBytes(2 * 1024 * 1024);
    const digest = await pushMixed(await tarOf({ "model/weights.bin": big, "model/config.json": "{}" }), readmeText);
    // the raw layer is fetched by the install, after the archive is unpacked: its GET is held until the test lets go
    const readme = `sha256:${sha256(readmeText)}`;
    const point = holdPoint(4);
    let held = false;
    proxy.fault = (req) => {
      if (held || req.method !== "GET" || !req.url!.includes(`/blobs/${readme}`)) return undefined;
      held = true;
      return { hold: point.hold };
    };
    let stream: { cancel(): void } | undefined;
    const pulling = pull(t.client, { name: "minilm" }, { onEvent: (_event, s) => (stream = s) });
    const partial = join(t.cacheRoot, ".blobs", "partial", "minilm");
    try {
      await point.reached;
      expect((await readdir(partial, { recursive: true })).filter((p) => p.endsWith("weights.bin")), "unpacked before the install").to.have.length(1);
      stream!.cancel();
      expect((await pulling).error?.code).to.equal(status.CANCELLED);
      await t.server.runtime.pulls.find("minilm")?.done;
    } finally {
      point.release();
    }
    const left = await readdir(partial, { recursive: true });
    expect(left.filter((p) => p.includes(".unpacked")), "unpacked entries left").to.deep.equal([]);
    expect(left.filter((p) => p.endsWith(digest.slice("sha256:".length))), "the verified archive blob").to.have.length(1);
    expect((await call(t.client, "getModel", { name: "minilm" })).model!.resolvedCommit).to.equal(before);
    for (const [path, data] of Object.entries(FILES)) expect(await readFile(join(t.cacheRoot, "minilm", path))).to.deep.equal(Buffer.from(data));
    const events = await pullOk(t.client, { name: "minilm" });
    expect(events.at(-1)!.completed!.manifest!.files.map((f) => f.path)).to.deep.equal(["README.md", "model/config.json", "model/weights.bin"]);
    expect(proxy.blobGets(digest), "GETs of the archive blob").to.have.length(1);
  });

  it("ResolveModel ALWAYS revalidates an unchanged archive model with one manifest request, and pulls a moved tag's new archive", async () => {
    const digest = await pushMixed(await tarOf({ "model/weights.bin": big, "model/config.json": "{}" }));
    await call(t.client, "registerModel", { model: modelSpec({ source: `oci://${proxy.address}/${REPO}`, revision: "v1" }) });
    const always = { name: "minilm", pullPolicy: PullPolicy.PULL_POLICY_ALWAYS, leaseSeconds: 0, credentialAlias: "" };
    expect((await call(t.client, "resolveModel", always)).pulled).to.equal(true);
    const calls = proxy.calls.length;
    const again = await call(t.client, "resolveModel", always);
    expect([again.pulled, again.revalidated]).to.deep.equal([false, true]);
    expect(proxy.calls.slice(calls).map((c) => c.method + " " + c.url.replace(/\/v2\/.*\/manifests\//, "manifests/"))).to.deep.equal(["HEAD manifests/v1"]);
    expect(proxy.blobGets(digest)).to.have.length(1);
    const moved = await pushMixed(await tarOf({ "model/weights.bin": "new", "model/config.json": "{}" }));
    const changed = await call(t.client, "resolveModel", always);
    expect([changed.pulled, changed.revalidated]).to.deep.equal([true, true]);
    expect(await readFile(join(t.cacheRoot, "minilm", "model/weights.bin"), "utf8")).to.equal("new");
    expect(proxy.blobGets(moved)).to.have.length(1);
    const partial = join(t.cacheRoot, ".blobs", "partial", "minilm");
    expect(await readdir(partial).catch(() => []), "nothing left of the pulls' downloads").to.deep.equal([]);
  });

  it("a forced re-pull of an archive model fetches and unpacks it again, reuses nothing, and installs the same files", async () => {
    const digest = await pushMixed(await tarOf({ "model/weights.bin": big, "model/config.json": "{}" }));
    await call(t.client, "registerModel", { model: modelSpec({ source: `oci://${proxy.address}/${REPO}`, revision: "v1" }) });
    const first = await pullOk(t.client, { name: "minilm" });
    const events = await pullOk(t.client, { name: "minilm", force: true });
    expect(proxy.blobGets(digest)).to.have.length(2);
    const completed = events.filter((e) => e.fileCompleted).map((e) => [e.fileCompleted!.path, e.fileCompleted!.reused]);
    expect(completed).to.have.deep.members([
      [digest, false],
      ["README.md", false],
      ["model/config.json", false],
      ["model/weights.bin", false],
    ]);
    expect(events.at(-1)!.completed!.manifest!.files).to.deep.equal(first.at(-1)!.completed!.manifest!.files);
    expect(await readFile(join(t.cacheRoot, "minilm", "model/weights.bin"))).to.deep.equal(big);
    // progress never passes the total PullStarted announced
    const total = Number(events[0]!.started!.totalBytes);
    for (const e of events.filter((e) => e.fileProgress)) expect(Number(e.fileProgress!.totalBytesDone)).to.be.at.most(total);
  });

  it("keeps progress within PullStarted's total when a moved tag's archive holds entries the store already has", async () => {
    const archive = await tarOf({ "model/weights.bin": big, "model/config.json": "{}" });
    const push = async (readme: Buffer) => {
      const config = await registry.pushBlob(REPO, "{}");
      const raw = await registry.pushBlob(REPO, readme);
      const layer = await registry.pushBlob(REPO, archive);
      await registry.pushManifest(REPO, "v1", modelPackManifest(config, [{ mediaType: "application/vnd.cncf.model.doc.v1.raw", ...raw, annotations: { "org.cncf.model.filepath": "README.md" } }, { mediaType: "application/vnd.cncf.model.weight.v1.tar", ...layer, annotations: { "org.cncf.model.filepath": "model" } }]));
    };
    await push(randomBytes(2 * 1024 * 1024));
    await call(t.client, "registerModel", { model: modelSpec({ source: `oci://${proxy.address}/${REPO}`, revision: "v1" }) });
    await pullOk(t.client, { name: "minilm" });
    // the raw layer changes; the archive's entries are in the store already
    await push(randomBytes(2 * 1024 * 1024));
    const events = await pullOk(t.client, { name: "minilm" });
    const total = Number(events[0]!.started!.totalBytes);
    const progress = events.filter((e) => e.fileProgress).map((e) => Number(e.fileProgress!.totalBytesDone));
    expect(progress.length).to.be.above(0);
    for (const done of progress) expect(done).to.be.at.most(total);
    const entries = events.filter((e) => e.fileCompleted && e.fileCompleted.path.startsWith("model/"));
    expect(entries.map((e) => e.fileCompleted!.reused)).to.deep.equal([true, true]);
  });

  it("holds an archive layer's download as the pull's: PruneCache issued while it is paused leaves it, and the pull completes", async () => {
    const archive = await tarOf({ "model/weights.bin": big, "model/config.json": "{}" });
    const digest = await pushMixed(archive);
    const point = holdPoint(1024 * 1024);
    let held = false;
    proxy.fault = (req) => {
      if (held || req.method !== "GET" || !req.url!.includes(`/blobs/${digest}`)) return undefined;
      held = true;
      return { hold: point.hold };
    };
    await call(t.client, "registerModel", { model: modelSpec({ source: `oci://${proxy.address}/${REPO}`, revision: "v1" }) });
    // a resumable download of another manifest, newer: PruneCache keeps only the newest of a tag's partials
    const other = join(t.cacheRoot, ".blobs", "partial", "minilm", "0".repeat(40));
    await mkdir(other, { recursive: true });
    await writeFile(join(other, "x"), "x");
    const future = new Date(Date.now() + 3600_000);
    await utimes(other, future, future);
    const pulling = pull(t.client, { name: "minilm" });
    try {
      await point.reached;
      await call(t.client, "pruneCache", { dryRun: false });
      const partial = join(t.cacheRoot, ".blobs", "partial", "minilm");
      const kept = (await readdir(partial, { recursive: true })).filter((p) => p.endsWith(digest.slice("sha256:".length)));
      expect(kept, "the archive's partial download").to.have.length(1);
    } finally {
      point.release();
    }
    const outcome = await pulling;
    expect(outcome.error).to.equal(undefined);
    expect(await readFile(join(t.cacheRoot, "minilm", "model/weights.bin"))).to.deep.equal(big);
    // one transfer: nothing was fetched again
    expect(proxy.blobGets(digest)).to.have.length(1);
  });
});

describe(`OCI blobs corrupted in transit${suffix}`, function () {
  let registry: OciRegistry;
  let proxy: OciFaultProxy;
  let t: TestServer;
  const suite = registrySuite({ faultProxy: true });
  beforeEach(() => ({ registry, proxy, t } = suite));

  /** Every blob of the store holds the bytes its name says. */
  async function expectStoreIntact(): Promise<void> {
    const dir = join(t.cacheRoot, ".blobs", "sha256");
    for (const name of await readdir(dir)) expect(sha256(await readFile(join(dir, name))), `stored blob ${name}`).to.equal(name);
  }

  for (const kind of ["a raw layer", "a .tar+gzip layer"] as const) {
    it(`fails DATA_LOSS naming ${kind} whose bytes a proxy flipped, keeps the previous install, the registry and the store intact, and pulls through a clean path`, async () => {
      const v1 = await registry.pushModelPack(REPO, "v1", FILES);
      await call(t.client, "registerModel", { model: modelSpec({ source: `oci://${proxy.address}/${REPO}`, revision: "v1" }) });
      await pullOk(t.client, { name: "minilm" });
      // v2: a changed weights file, as a raw layer or inside a .tar+gzip layer
      const weights = Buffer.alloc(300_000, 9);
      const config = await registry.pushBlob(REPO, "{}");
      const data = kind === "a raw layer" ? weights : gzipSync(await tarOf({ "onnx/model.onnx": weights }));
      const layer = await registry.pushBlob(REPO, data);
      const mediaType = kind === "a raw layer" ? "application/vnd.cncf.model.weight.v1.raw" : "application/vnd.cncf.model.weight.v1.tar+gzip";
      await registry.pushManifest(REPO, "v2", modelPackManifest(config, [{ mediaType, ...layer, annotations: { "org.cncf.model.filepath": kind === "a raw layer" ? "onnx/model.onnx" : "onnx" } }]));
      await call(t.client, "updateModel", { name: "minilm", model: modelSpec({ source: `oci://${proxy.address}/${REPO}`, revision: "v2" }) });
      proxy.fault = (req) => (req.method === "GET" && req.url!.includes(`/blobs/${layer.digest}`) ? { flipByteAt: Math.floor(data.length / 2) } : undefined);
      const outcome = await pull(t.client, { name: "minilm" });
      expect(outcome.error?.code).to.equal(status.DATA_LOSS);
      expect(outcome.error?.details).to.include(layer.digest);
      expect(proxy.blobGets(layer.digest)).to.have.length(1);
      // the previous install, the registry's blob and the store are as they were
      const model = await call(t.client, "getModel", { name: "minilm" });
      expect(model.model!.resolvedCommit).to.equal(v1);
      expect(await readFile(join(t.cacheRoot, "minilm", "onnx/model.onnx"))).to.deep.equal(FILES["onnx/model.onnx"]);
      expect(sha256(await readFile(registry.blobPath(layer.digest)))).to.equal(layer.digest.slice("sha256:".length));
      await expectStoreIntact();
      const partials = await readdir(join(t.cacheRoot, ".blobs", "partial"), { recursive: true }).catch(() => [] as string[]);
      expect(partials.filter((p) => p.endsWith(layer.digest.slice("sha256:".length)) || p.endsWith("model.onnx")), "corrupt partials").to.deep.equal([]);
      // the same pull through a clean path installs v2
      proxy.fault = () => undefined;
      await pullOk(t.client, { name: "minilm" });
      expect(await readFile(join(t.cacheRoot, "minilm", "onnx/model.onnx"))).to.deep.equal(weights);
      await expectStoreIntact();
    });
  }
});

describe(`OCI blob downloads through a faulty connection${suffix}`, function () {
  let registry: OciRegistry;
  let t: TestServer;
  let proxy: ReturnType<typeof createServer>;
  const gets: { range?: string; sent: number }[] = [];
  const big = patternedBytes(3 * 1024 * 1024);
  before(function () {
    if (!registryAvailable) this.skip();
  });
  beforeEach(async () => {
    if (!registryAvailable) return;
    registry = await OciRegistry.start();
    let dropped = false;
    // a proxy of the test's own: the first blob GET of the big layer is cut after 1 MiB
    proxy = createServer(async (req, res) => {
      const upstream = await fetch(`http://${registry.address}${req.url}`, { method: req.method, headers: { accept: String(req.headers.accept ?? ""), ...(req.headers.range ? { range: req.headers.range } : {}) } });
      const body = Buffer.from(await upstream.arrayBuffer());
      res.writeHead(upstream.status, Object.fromEntries(upstream.headers));
      if (req.url!.includes(`/blobs/sha256:${sha256(big)}`)) {
        const record = { range: req.headers.range, sent: body.length };
        gets.push(record);
        if (!dropped) {
          dropped = true;
          record.sent = 1024 * 1024;
          res.write(body.subarray(0, record.sent), () => res.destroy());
          return;
        }
      }
      res.end(body);
    });
    await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
    const address = `127.0.0.1:${(proxy.address() as AddressInfo).port}`;
    t = await startTestServer({ offline: false, ociPlainHttp: [address], progressIntervalMs: 0, parallelRangeMinBytes: 64 * 1024 * 1024, parallelRangeBelowBytesPerSecond: Infinity });
    await registry.pushModelPack(REPO, "v1", { "model.onnx": big });
    await call(t.client, "registerModel", { model: modelSpec({ source: `oci://${address}/${REPO}`, revision: "v1" }) });
  });
  afterEach(async () => {
    await t?.close();
    proxy?.closeAllConnections();
    await new Promise((resolve) => proxy?.close(resolve));
    await registry?.close();
  });

  it("resumes a blob whose connection dropped midway, fetching only the missing bytes", async () => {
    await pullOk(t.client, { name: "minilm" });
    expect(gets).to.have.length(2);
    const resumedAt = Number(/^bytes=(\d+)-$/.exec(gets[1]!.range ?? "")?.[1]);
    expect(resumedAt).to.be.above(0);
    expect(gets[1]!.sent).to.equal(big.length - resumedAt);
    expect(await readFile(join(t.cacheRoot, "minilm", "model.onnx"))).to.deep.equal(big);
  });
});

describe(`large OCI blobs fetched in parallel ranges${suffix}`, function () {
  let registry: OciRegistry;
  let proxy: OciFaultProxy;
  let t: TestServer;
  const suite = registrySuite({ faultProxy: true, server: { parallelRangeMinBytes: 1024 * 1024, parallelRangeBelowBytesPerSecond: Infinity } });
  beforeEach(() => ({ registry, proxy, t } = suite));

  it("fetches a blob past --parallel-range-min-bytes as several Range requests at once, tiling it, and installs it byte-identical", async () => {
    const big = patternedBytes(4 * 1024 * 1024);
    await registry.pushModelPack(REPO, "v1", { "model.onnx": big, "config.json": "{}" });
    const digest = `sha256:${sha256(big)}`;
    // every range of the big blob waits until a second one is in flight: only a parallel download gets past this
    let second!: () => void;
    const twoInFlight = new Promise<void>((resolve) => (second = resolve));
    proxy.fault = (req) => {
      if (req.method !== "GET" || !req.url!.includes(`/blobs/${digest}`) || req.headers.range === undefined) return undefined;
      if (proxy.blobGets(digest).length >= 2) second();
      return { hold: { afterBytes: 0, reached: () => undefined, until: twoInFlight } };
    };
    await call(t.client, "registerModel", { model: modelSpec({ source: `oci://${proxy.address}/${REPO}`, revision: "v1" }) });
    await pullOk(t.client, { name: "minilm" });
    const ranges = proxy.blobGets(digest).map((c) => /^bytes=(\d+)-(\d+)$/.exec(c.range ?? ""));
    expect(ranges.length).to.be.at.least(2);
    expect(ranges.every((r) => r !== null), "every GET of the blob asks for a range").to.equal(true);
    const tiles = ranges.map((r) => [Number(r![1]), Number(r![2]) + 1] as const).sort((a, b) => a[0] - b[0]);
    expect(tiles[0]![0]).to.equal(0);
    for (let i = 1; i < tiles.length; i++) expect(tiles[i]![0]).to.equal(tiles[i - 1]![1]);
    expect(tiles.at(-1)![1]).to.equal(big.length);
    expect(await readFile(join(t.cacheRoot, "minilm", "model.onnx"))).to.deep.equal(big);
  });

  it("with force fetches a blob again as ranges and compares it with the stored copy, which stays as it was: nothing written", async () => {
    const big = patternedBytes(4 * 1024 * 1024);
    await registry.pushModelPack(REPO, "v1", { "model.onnx": big, "config.json": "{}" });
    const digest = `sha256:${sha256(big)}`;
    await call(t.client, "registerModel", { model: modelSpec({ source: `oci://${proxy.address}/${REPO}`, revision: "v1" }) });
    await pullOk(t.client, { name: "minilm" });
    const blob = join(t.cacheRoot, ".blobs", "sha256", sha256(big));
    const before = await stat(blob);
    const gets = proxy.blobGets(digest).length;
    await pullOk(t.client, { name: "minilm", force: true });
    const ranges = proxy.blobGets(digest).slice(gets).map((c) => /^bytes=(\d+)-(\d+)$/.exec(c.range ?? ""));
    expect(ranges.length, "fetched again").to.be.at.least(2);
    const fetched = ranges.reduce((sum, r) => sum + Number(r![2]) + 1 - Number(r![1]), 0);
    expect(fetched).to.equal(big.length);
    const after = await stat(blob);
    expect([after.ino, after.mtimeMs]).to.deep.equal([before.ino, before.mtimeMs]);
    expect((await stat(join(t.cacheRoot, "minilm", "model.onnx"))).ino).to.equal(before.ino);
    expect((await call(t.client, "inspectCache", { name: "minilm", deep: true })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
  });
});

describe(`OCI downloads under --max-bytes-per-second${suffix}`, function () {
  before(function () {
    if (!registryAvailable) this.skip();
  });

  it("passes every downloaded byte of raw and archive layers through the server's one rate cap, which hub downloads share", async () => {
    const registry = await OciRegistry.start();
    const hub = await FakeHub.serve("acme/tiny-minilm", FIXTURE_DIR, {});
    // high enough not to slow the test: what is checked is the cap's own count, not the time taken
    const t = await startTestServer({ offline: false, hubUrl: hub.url, ociPlainHttp: [registry.address], progressIntervalMs: 0, maxBytesPerSecond: 1024 ** 3 });
    try {
      const archive = gzipSync(await tarOf({ "docs/README.md": "# minilm" }));
      const config = await registry.pushBlob(REPO, "{}");
      const raw = await registry.pushBlob(REPO, FILES["onnx/model.onnx"]);
      const layer = await registry.pushBlob(REPO, archive);
      await registry.pushManifest(REPO, "v1", modelPackManifest(config, [
        { mediaType: "application/vnd.cncf.model.weight.v1.raw", ...raw, annotations: { "org.cncf.model.filepath": "onnx/model.onnx" } },
        { mediaType: "application/vnd.cncf.model.doc.v1.tar+gzip", ...layer, annotations: { "org.cncf.model.filepath": "docs" } },
      ]));
      await call(t.client, "registerModel", { model: modelSpec({ source: `oci://${registry.address}/${REPO}`, revision: "v1" }) });
      const bandwidth = t.server.runtime.hub.bandwidth!;
      expect(bandwidth.passedBytes).to.equal(0);
      await pullOk(t.client, { name: "minilm" });
      expect(bandwidth.passedBytes).to.equal(raw.size + layer.size);
      // a hub pull's bytes go through the same cap
      await call(t.client, "registerModel", { model: modelSpec({ name: "hubmodel", source: "acme/tiny-minilm", revision: "main" }) });
      const events = await pullOk(t.client, { name: "hubmodel" });
      const hubBytes = events.at(-1)!.completed!.manifest!.files.reduce((sum, f) => sum + Number(f.sizeBytes), 0);
      expect(bandwidth.passedBytes).to.equal(raw.size + layer.size + hubBytes);
    } finally {
      await t.close();
      await hub.close();
      await registry.close();
    }
  });
});

describe(`an OCI pull killed mid-download${suffix}`, function () {
  before(function () {
    if (!registryAvailable) this.skip();
  });

  it("after SIGKILL while an archive layer is downloading, the restarted server (--oci-plain-http) pulls it again and installs the files whole", async () => {
    const registry = await OciRegistry.start();
    const dataDir = await mkdtemp(join(tmpdir(), "oci-crash-"));
    const big = patternedBytes(3 * 1024 * 1024);
    const archive = await tarOf({ "model/weights.bin": big, "model/config.json": "{}" });
    const ranges: (string | undefined)[] = [];
    let hold: (() => void) | undefined;
    const holding = new Promise<void>((resolve) => (hold = resolve));
    let first = true;
    // the first GET of the archive blob stops after 1 MiB and stays open until the server is killed
    const proxy = createServer(async (req, res) => {
      const upstream = await fetch(`http://${registry.address}${req.url}`, { method: req.method, headers: { accept: String(req.headers.accept ?? ""), ...(req.headers.range ? { range: req.headers.range } : {}) } });
      const body = Buffer.from(await upstream.arrayBuffer());
      res.writeHead(upstream.status, Object.fromEntries(upstream.headers));
      if (req.url!.includes(`/blobs/sha256:${sha256(archive)}`)) {
        ranges.push(req.headers.range);
        if (first) {
          first = false;
          res.write(body.subarray(0, 1024 * 1024), () => hold!());
          return;
        }
      }
      res.end(body);
    });
    await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
    const address = `127.0.0.1:${(proxy.address() as AddressInfo).port}`;
    try {
      const config = await registry.pushBlob(REPO, "{}");
      const layer = await registry.pushBlob(REPO, archive);
      await registry.pushManifest(REPO, "v1", modelPackManifest(config, [{ mediaType: "application/vnd.cncf.model.weight.v1.tar", ...layer, annotations: { "org.cncf.model.filepath": "model" } }]));
      const args = ["--oci-plain-http", address];
      let server = await spawnServer({ dataDir, args });
      try {
        await call(server.client, "registerModel", { model: modelSpec({ source: `oci://${address}/${REPO}`, revision: "v1" }) });
        const pulling = pull(server.client, { name: "minilm" });
        await holding;
        // the kill comes while the transfer is open (how much of the 1 MiB reached the partial is not asserted)
        await server.kill();
        await pulling.catch(() => undefined);
      } finally {
        server.client.close();
        await server.kill();
      }
      server = await spawnServer({ dataDir, args });
      try {
        const events = await pullOk(server.client, { name: "minilm" });
        expect(events.at(-1)!.completed!.manifest!.files.map((f) => f.path)).to.deep.equal(["model/config.json", "model/weights.bin"]);
        const cacheDir = events.at(-1)!.completed!.cacheDir;
        expect(await readFile(join(cacheDir, "model/weights.bin"))).to.deep.equal(big);
        expect(ranges).to.have.length(2);
      } finally {
        server.client.close();
        await server.kill();
      }
    } finally {
      proxy.closeAllConnections();
      await new Promise((resolve) => proxy.close(resolve));
      await registry.close();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});

/** A registry behind a fault proxy, and a data dir for servers the test kills: all gone after `run`, however it ends. */
async function crashScene(run: (scene: { registry: OciRegistry; proxy: OciFaultProxy; dataDir: string }) => Promise<void>): Promise<void> {
  const registry = await OciRegistry.start();
  const proxy = await OciFaultProxy.start(registry.address);
  const dataDir = await mkdtemp(join(tmpdir(), "oci-crash-"));
  try {
    await run({ registry, proxy, dataDir });
  } finally {
    await proxy.close();
    await registry.close();
    await rm(dataDir, { recursive: true, force: true });
  }
}

describe(`an OCI pull killed between archive layers${suffix}`, function () {
  before(function () {
    if (!registryAvailable) this.skip();
  });

  it("after SIGKILL once one archive layer is unpacked and the next is downloading, the restarted server installs nothing half, then pulls both whole", async () => {
    await crashScene(async ({ registry, proxy, dataDir }) => {
      const big = patternedBytes(2 * 1024 * 1024);
      const first = await tarOf({ "a/config.json": "{}", "a/vocab.txt": "a b c" });
      const second = await tarOf({ "b/weights.bin": big });
      const point = holdPoint(1024 * 1024);
      let held = false;
      // the first GET of the second archive stops after 1 MiB until the test lets go: the first archive is unpacked by then
      proxy.fault = (req) => {
        if (held || req.method !== "GET" || !req.url!.includes(`/blobs/sha256:${sha256(second)}`)) return undefined;
        held = true;
        return { hold: point.hold };
      };
      const config = await registry.pushBlob(REPO, "{}");
      const layerA = await registry.pushBlob(REPO, first);
      const layerB = await registry.pushBlob(REPO, second);
      const tar = "application/vnd.cncf.model.weight.v1.tar";
      await registry.pushManifest(REPO, "v1", modelPackManifest(config, [{ mediaType: tar, ...layerA, annotations: { "org.cncf.model.filepath": "a" } }, { mediaType: tar, ...layerB, annotations: { "org.cncf.model.filepath": "b" } }]));
      const args = ["--oci-plain-http", proxy.address];
      let server = await spawnServer({ dataDir, args });
      try {
        await call(server.client, "registerModel", { model: modelSpec({ source: `oci://${proxy.address}/${REPO}`, revision: "v1" }) });
        const pulling = pull(server.client, { name: "minilm" });
        await point.reached;
        await server.kill();
        await pulling.catch(() => undefined);
      } finally {
        point.release();
        server.client.close();
        await server.kill();
      }
      server = await spawnServer({ dataDir, args });
      try {
        // the old state: nothing installed
        const model = await call(server.client, "getModel", { name: "minilm" });
        expect(model.model!.resolvedCommit).to.equal("");
        const events = await pullOk(server.client, { name: "minilm" });
        expect(events.at(-1)!.completed!.manifest!.files.map((f) => f.path)).to.deep.equal(["a/config.json", "a/vocab.txt", "b/weights.bin"]);
        const cacheDir = events.at(-1)!.completed!.cacheDir;
        expect(await readFile(join(cacheDir, "b/weights.bin"))).to.deep.equal(big);
        expect(await readFile(join(cacheDir, "a/vocab.txt"), "utf8")).to.equal("a b c");
      } finally {
        server.client.close();
        await server.kill();
      }
    });
  });
});

describe(`an OCI pull killed once its archive is unpacked, before the install is promoted${suffix}`, function () {
  before(function () {
    if (!registryAvailable) this.skip();
  });

  it("after SIGKILL the restarted server keeps the previous install, PruneCache counts and removes the unpacked entries but keeps the verified blob, and the next pull fetches nothing twice", async () => {
    await crashScene(async ({ registry, proxy, dataDir }) => {
      const cacheRoot = join(dataDir, "ai_models_cache");
      const partial = join(cacheRoot, ".blobs", "partial", "minilm");
      const big = patternedBytes(2 * 1024 * 1024);
      const archive = await tarOf({ "model/config.json": "{}", "model/weights.bin": big });
      // four large raw layers, first in path order, each held after a byte: every one of the install's four workers for large files waits on one,
      // so the large entry waits in the unpacked dir
      const raws = ["0.txt", "1.txt", "2.txt", "3.txt"];
      const rawText = (name: string) => Buffer.concat([Buffer.from(`raw ${name}`), patternedBytes(1024 * 1024)]);
      let release!: () => void;
      const until = new Promise<void>((resolve) => (release = resolve));
      let allHeld!: () => void;
      const held = new Promise<void>((resolve) => (allHeld = resolve));
      let holding = 0;
      const rawDigests = raws.map((name) => `sha256:${sha256(rawText(name))}`);
      proxy.fault = (req) => {
        if (req.method !== "GET" || !rawDigests.some((d) => req.url!.includes(`/blobs/${d}`))) return undefined;
        return { hold: { afterBytes: 1, reached: () => void (++holding === raws.length && allHeld()), until } };
      };
      const before = await registry.pushModelPack(REPO, "v1", FILES);
      const config = await registry.pushBlob(REPO, "{}");
      const layers = [];
      for (const name of raws) layers.push({ mediaType: "application/vnd.cncf.model.doc.v1.raw", ...(await registry.pushBlob(REPO, rawText(name))), annotations: { "org.cncf.model.filepath": name } });
      const layer = await registry.pushBlob(REPO, archive);
      layers.push({ mediaType: "application/vnd.cncf.model.weight.v1.tar", ...layer, annotations: { "org.cncf.model.filepath": "model" } });
      const args = ["--oci-plain-http", proxy.address];
      let server = await spawnServer({ dataDir, args });
      try {
        await call(server.client, "registerModel", { model: modelSpec({ source: `oci://${proxy.address}/${REPO}`, revision: "v1" }) });
        await pullOk(server.client, { name: "minilm" });
        await registry.pushManifest(REPO, "v1", { schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json", artifactType: "application/vnd.cncf.model.manifest.v1+json", config: { mediaType: "application/vnd.cncf.model.config.v1+json", ...config }, layers });
        const pulling = pull(server.client, { name: "minilm" });
        await held;
        expect((await readdir(partial, { recursive: true })).filter((p) => p.endsWith("weights.bin")), "unpacked, not installed").to.have.length(1);
        await server.kill();
        await pulling.catch(() => undefined);
      } finally {
        release();
        server.client.close();
        await server.kill();
      }
      server = await spawnServer({ dataDir, args });
      try {
        // the old state: the previous install, whole
        expect((await call(server.client, "getModel", { name: "minilm" })).model!.resolvedCommit).to.equal(before);
        for (const [path, data] of Object.entries(FILES)) expect(await readFile(join(cacheRoot, "minilm", path))).to.deep.equal(Buffer.from(data));
        // the unpacked entries are derived from the blob: reclaimable, and PruneCache removes them; the verified blob stays to resume from
        expect(Number((await call(server.client, "describeCache", {})).reclaimableBytes)).to.be.at.least(big.length);
        const pruned = await call(server.client, "pruneCache", { dryRun: false });
        expect(Number(pruned.freedBytes)).to.be.at.least(big.length);
        const left = await readdir(partial, { recursive: true });
        expect(left.filter((p) => p.includes(".unpacked"))).to.deep.equal([]);
        expect(left.filter((p) => p.endsWith(layer.digest.slice("sha256:".length)))).to.have.length(1);
        const events = await pullOk(server.client, { name: "minilm" });
        expect(events.at(-1)!.completed!.manifest!.files.map((f) => f.path)).to.deep.equal([...raws, "model/config.json", "model/weights.bin"]);
        expect(await readFile(join(cacheRoot, "minilm", "model/weights.bin"))).to.deep.equal(big);
        expect(proxy.blobGets(layer.digest), "GETs of the archive blob").to.have.length(1);
      } finally {
        server.client.close();
        await server.kill();
      }
    });
  });
});

describe("OCI sources on an offline server", () => {
  it("refuses to pull an oci:// source offline, naming its registry and what to do", async () => {
    const t = await startTestServer({ offline: true });
    try {
      await call(t.client, "registerModel", { model: modelSpec({ source: "oci://registry.example.com/models/minilm", revision: "v1" }) });
      const outcome = await pull(t.client, { name: "minilm" });
      expect(outcome.error?.code).to.equal(status.FAILED_PRECONDITION);
      expect(outcome.error?.details).to.include("needs its registry").and.include("--offline");
    } finally {
      await t.close();
    }
  });
});

describe(`OCI archive layers that unpack to more than their blob${suffix}`, function () {
  let registry: OciRegistry;
  let t: TestServer;
  let other: { dir: string; cleanup: () => Promise<void> } | undefined;
  const MiB = 1024 * 1024;
  // what the other install holds: random, so it does not compress
  const otherBytes = randomBytes(2 * MiB);
  before(function () {
    if (!registryAvailable) this.skip();
  });
  beforeEach(async () => {
    if (!registryAvailable) return;
    registry = await OciRegistry.start();
    other = await makeSourceDir({ "weights.bin": otherBytes });
    // the other install and the archive's blob fit; the archive's 2 MiB of entries do not fit beside the other install
    t = await startTestServer({ offline: false, ociPlainHttp: [registry.address], progressIntervalMs: 0, cacheMaxBytes: 3 * MiB });
  });
  afterEach(async () => {
    await t?.close();
    await registry?.close();
    await other?.cleanup();
  });

  async function pushBomb(): Promise<Buffer> {
    const bomb = gzipSync(await tarOf({ "zeros.bin": Buffer.alloc(2 * MiB) }));
    const config = await registry.pushBlob(REPO, "{}");
    const layer = await registry.pushBlob(REPO, bomb);
    await registry.pushManifest(REPO, "v1", modelPackManifest(config, [{ mediaType: "application/vnd.cncf.model.weight.v1.tar+gzip", ...layer, annotations: { "org.cncf.model.filepath": "model" } }]));
    return bomb;
  }
  const statusOf = async (name: string) => (await call(t.client, "getModel", { name })).model!.status;

  it("reserves room for what a .tar+gzip layer unpacks to, evicting the least recently used install under --cache-max-bytes", async () => {
    expect((await pushBomb()).length).to.be.below(MiB / 4);
    await call(t.client, "registerModel", { model: modelSpec({ name: "other" }) });
    await pullOk(t.client, { name: "other", fixtureDir: other!.dir });
    await call(t.client, "registerModel", { model: modelSpec({ source: `oci://${registry.address}/${REPO}`, revision: "v1" }) });
    await pullOk(t.client, { name: "minilm" });
    expect(await readFile(join(t.cacheRoot, "minilm", "model/zeros.bin"))).to.deep.equal(Buffer.alloc(2 * MiB));
    expect(await statusOf("other")).to.equal(ModelStatus.MODEL_STATUS_REGISTERED);
    expect(Number((await call(t.client, "describeCache", {})).storedBytes)).to.be.at.most(3 * MiB);
  });

  it("counts an entry once it is unpacked as stored, not also as reserved: an archive that fits the quota installs without evicting", async () => {
    // four entries of 1 MiB under a 5 MiB quota beside nothing else: counted twice while unpacking (on disk and reserved), the third would not fit
    await t.restart({ offline: false, ociPlainHttp: [registry.address], progressIntervalMs: 0, cacheMaxBytes: 5 * MiB });
    const entries = Object.fromEntries([0, 1, 2, 3].map((i) => [`part${i}.bin`, Buffer.alloc(MiB, i)]));
    const config = await registry.pushBlob(REPO, "{}");
    const layer = await registry.pushBlob(REPO, gzipSync(await tarOf(entries)));
    await registry.pushManifest(REPO, "v1", modelPackManifest(config, [{ mediaType: "application/vnd.cncf.model.weight.v1.tar+gzip", ...layer, annotations: { "org.cncf.model.filepath": "model" } }]));
    await call(t.client, "registerModel", { model: modelSpec({ source: `oci://${registry.address}/${REPO}`, revision: "v1" }) });
    const events = await pullOk(t.client, { name: "minilm" });
    expect(events.at(-1)!.completed!.manifest!.files).to.have.length(4);
  });

  it("evicts nothing for an archive whose entries fit beside the other installs", async () => {
    await t.restart({ offline: false, ociPlainHttp: [registry.address], progressIntervalMs: 0, cacheMaxBytes: 4 * MiB + 64 * 1024 });
    await pushBomb();
    await call(t.client, "registerModel", { model: modelSpec({ name: "other" }) });
    await pullOk(t.client, { name: "other", fixtureDir: other!.dir });
    await call(t.client, "registerModel", { model: modelSpec({ source: `oci://${registry.address}/${REPO}`, revision: "v1" }) });
    await pullOk(t.client, { name: "minilm" });
    expect(await statusOf("other")).to.equal(ModelStatus.MODEL_STATUS_INSTALLED);
    expect(Number((await call(t.client, "describeCache", {})).storedBytes)).to.be.at.most(4 * MiB + 64 * 1024);
  });

  it("refuses with RESOURCE_EXHAUSTED naming --cache-max-bytes when no eviction makes room for the unpacked entries, writing none of them and keeping the other install", async () => {
    await pushBomb();
    await call(t.client, "registerModel", { model: modelSpec({ name: "other", pinned: true }) });
    await pullOk(t.client, { name: "other", fixtureDir: other!.dir });
    await call(t.client, "registerModel", { model: modelSpec({ source: `oci://${registry.address}/${REPO}`, revision: "v1" }) });
    const outcome = await pull(t.client, { name: "minilm" });
    expect(outcome.error?.code).to.equal(status.RESOURCE_EXHAUSTED);
    expect(outcome.error?.details).to.include("--cache-max-bytes").and.include("layer 0").and.include("model/zeros.bin");
    const partial = await readdir(join(t.cacheRoot, ".blobs", "partial"), { recursive: true }).catch(() => []);
    expect(partial.filter((p) => p.endsWith("zeros.bin")), "entries written").to.deep.equal([]);
    expect(await statusOf("other")).to.equal(ModelStatus.MODEL_STATUS_INSTALLED);
    expect(await statusOf("minilm")).to.equal(ModelStatus.MODEL_STATUS_REGISTERED);
    expect(await readFile(join(t.cacheRoot, "other", "weights.bin"))).to.deep.equal(otherBytes);
    expect(Number((await call(t.client, "describeCache", {})).storedBytes)).to.be.at.most(3 * MiB);
  });
});

describe(`OCI archive entries refused before they are written${suffix}`, function () {
  let registry: OciRegistry;
  let t: TestServer;
  before(function () {
    if (!registryAvailable) this.skip();
  });
  beforeEach(async () => {
    if (!registryAvailable) return;
    registry = await OciRegistry.start();
    t = await startTestServer({ offline: false, ociPlainHttp: [registry.address], progressIntervalMs: 0 });
    await call(t.client, "registerModel", { model: modelSpec({ source: `oci://${registry.address}/${REPO}`, revision: "v1" }) });
  });
  afterEach(async () => {
    await t?.close();
    await registry?.close();
  });

  type Entry = { name: string; data?: Buffer | string; type?: "link" | "character-device" | "fifo"; linkname?: string; pax?: Record<string, string> };
  /** A tar of raw entries, in order: duplicates and headers tarOf cannot say. */
  async function rawTar(entries: Entry[]): Promise<Buffer> {
    const packer = pack();
    for (const e of entries) {
      if (e.type) packer.entry({ name: e.name, type: e.type, linkname: e.linkname, devmajor: 1, devminor: 3 });
      else packer.entry({ name: e.name, pax: e.pax }, Buffer.from(e.data ?? ""));
    }
    packer.finalize();
    const chunks: Buffer[] = [];
    for await (const chunk of packer) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks);
  }
  /** A ModelPack of a raw layer `model/raw.txt` and one archive layer under "model"; the pull's outcome. */
  async function pullArchive(archive: Buffer, gzip = false, torn = false) {
    const config = await registry.pushBlob(REPO, "{}");
    const raw = await registry.pushBlob(REPO, "raw");
    const compressed = gzip ? gzipSync(archive) : archive;
    const layer = await registry.pushBlob(REPO, torn ? compressed.subarray(0, compressed.length / 2) : compressed);
    await registry.pushManifest(REPO, "v1", modelPackManifest(config, [
      { mediaType: "application/vnd.cncf.model.doc.v1.raw", ...raw, annotations: { "org.cncf.model.filepath": "model/raw.txt" } },
      { mediaType: `application/vnd.cncf.model.weight.v1.tar${gzip ? "+gzip" : ""}`, ...layer, annotations: { "org.cncf.model.filepath": "model" } },
    ]));
    return pull(t.client, { name: "minilm" });
  }
  /** Every file under the data dir and the cache root whose name includes `marker` (nothing may be written for a refused entry). */
  async function written(marker: string): Promise<string[]> {
    const found: string[] = [];
    for (const root of [t.dataDir, t.cacheRoot, join(t.cacheRoot, "..")]) {
      for (const path of await readdir(root, { recursive: true }).catch(() => [] as string[])) if (path.includes(marker)) found.push(join(root, path));
    }
    return found;
  }

  const cases: { title: string; entries: Entry[]; code: status; names: string[] }[] = [
    { title: "an absolute path", entries: [{ name: "/etc/evil-abs.txt", data: "x" }], code: status.INVALID_ARGUMENT, names: ["/etc/evil-abs.txt"] },
    { title: "a path with '..'", entries: [{ name: "model/../../evil-dots.txt", data: "x" }], code: status.INVALID_ARGUMENT, names: ["evil-dots.txt", "'..'"] },
    { title: "a pax header whose path escapes", entries: [{ name: "model/fine.txt", data: "x", pax: { path: "../../evil-pax.txt" } }], code: status.INVALID_ARGUMENT, names: ["evil-pax.txt"] },
    { title: "a hard link", entries: [{ name: "model/evil-hard", type: "link", linkname: "/etc/passwd" }], code: status.FAILED_PRECONDITION, names: ["model/evil-hard", "link"] },
    { title: "a character device", entries: [{ name: "model/evil-dev", type: "character-device" }], code: status.FAILED_PRECONDITION, names: ["model/evil-dev", "character-device"] },
    { title: "a fifo", entries: [{ name: "model/evil-fifo", type: "fifo" }], code: status.FAILED_PRECONDITION, names: ["model/evil-fifo", "fifo"] },
    { title: "the same path twice", entries: [{ name: "model/twice.txt", data: "a" }, { name: "model/twice.txt", data: "b" }], code: status.FAILED_PRECONDITION, names: ["model/twice.txt"] },
    { title: "a path a raw layer names", entries: [{ name: "model/raw.txt", data: "other" }], code: status.FAILED_PRECONDITION, names: ["model/raw.txt"] },
    { title: "a file that another entry makes a directory", entries: [{ name: "model/evil-dir", data: "a" }, { name: "model/evil-dir/inner.txt", data: "b" }], code: status.FAILED_PRECONDITION, names: ["model/evil-dir/inner.txt", "model/evil-dir"] },
    { title: "a directory path that a later entry makes a file", entries: [{ name: "model/sub/inner.txt", data: "a" }, { name: "model/sub", data: "b" }], code: status.FAILED_PRECONDITION, names: ["'model/sub'"] },
    { title: "a declared size (pax) past --max-file-bytes", entries: [{ name: "model/evil-huge.bin", data: "x", pax: { size: String(2 ** 40) } }], code: status.RESOURCE_EXHAUSTED, names: ["model/evil-huge.bin", "--max-file-bytes"] },
  ];
  for (const c of cases) {
    it(`refuses an entry that is ${c.title}, naming it, with nothing written for it and no install`, async () => {
      const outcome = await pullArchive(await rawTar(c.entries));
      expect(outcome.error?.code, outcome.error?.details).to.equal(c.code);
      for (const name of c.names) expect(outcome.error?.details).to.include(name);
      expect(await written("evil")).to.deep.equal([]);
      expect((await call(t.client, "getModel", { name: "minilm" })).model!.status).to.equal(ModelStatus.MODEL_STATUS_REGISTERED);
    });
  }

  it("refuses a gzip bomb, too many entries, and entries past --max-pull-bytes before writing the entry that crosses the limit", async () => {
    await t.restart({ offline: false, ociPlainHttp: [registry.address], progressIntervalMs: 0, pullLimits: { maxFiles: 3, maxFileBytes: 2 * 1024 * 1024, maxTotalBytes: 3 * 1024 * 1024 } });
    let outcome = await pullArchive(await rawTar([{ name: "model/evil-bomb.bin", data: Buffer.alloc(64 * 1024 * 1024) }]), true);
    expect(outcome.error?.code).to.equal(status.RESOURCE_EXHAUSTED);
    expect(outcome.error?.details).to.include("--max-file-bytes").and.include("model/evil-bomb.bin");
    outcome = await pullArchive(await rawTar([{ name: "model/a.bin", data: Buffer.alloc(2 * 1024 * 1024) }, { name: "model/evil-total.bin", data: Buffer.alloc(2 * 1024 * 1024) }]), true);
    expect(outcome.error?.code).to.equal(status.RESOURCE_EXHAUSTED);
    expect(outcome.error?.details).to.include("--max-pull-bytes").and.include("model/evil-total.bin");
    outcome = await pullArchive(await rawTar([{ name: "model/a", data: "a" }, { name: "model/b", data: "b" }, { name: "model/evil-third", data: "c" }]));
    expect(outcome.error?.code).to.equal(status.RESOURCE_EXHAUSTED);
    expect(outcome.error?.details).to.include("--max-files-per-pull").and.include("model/evil-third");
    expect(await written("evil")).to.deep.equal([]);
  });

  it("refuses a .tar+gzip layer whose stream ends midway (its digest intact) with FAILED_PRECONDITION, leaving none of its entries", async () => {
    const random = randomBytes(256 * 1024);
    const outcome = await pullArchive(await rawTar([{ name: "model/evil-first.bin", data: random }, { name: "model/evil-second.bin", data: random }]), true, true);
    expect(outcome.error?.code).to.equal(status.FAILED_PRECONDITION);
    expect(outcome.error?.details).to.include("is not a readable tar archive").and.include("layer 1");
    expect(await written("evil")).to.deep.equal([]);
  });

  it("leaves excluded entries unwritten and out of the limits", async () => {
    await t.restart({ offline: false, ociPlainHttp: [registry.address], progressIntervalMs: 0, pullLimits: { maxFiles: 3, maxFileBytes: 1024 * 1024, maxTotalBytes: 1024 * 1024 } });
    await call(t.client, "updateModel", { name: "minilm", model: modelSpec({ source: `oci://${registry.address}/${REPO}`, revision: "v1", exclude: ["model/evil*"] }) });
    const outcome = await pullArchive(await rawTar([{ name: "model/kept.txt", data: "k" }, { name: "model/evil-big.bin", data: Buffer.alloc(4 * 1024 * 1024) }, { name: "model/evil-2", data: "x" }, { name: "model/evil-3", data: "x" }]), true);
    expect(outcome.error, outcome.error?.details).to.equal(undefined);
    expect(outcome.events.at(-1)!.completed!.manifest!.files.map((f) => f.path)).to.deep.equal(["model/kept.txt", "model/raw.txt"]);
    expect(await written("evil")).to.deep.equal([]);
  });
});
