import { createHash } from "node:crypto";
import { mkdtemp, readdir, readFile, readlink, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { downloadFile, downloadFileToCacheDir, listFiles, modelInfo, snapshotDownload } from "@huggingface/hub";
import { expect } from "chai";
import { Agent, type IncomingMessage, get as httpGet } from "node:http";
import { connect } from "node:net";
import { get as httpsGet } from "node:https";
import { pino } from "pino";
import { AccessTokens } from "../src/auth/access-tokens.js";
import { startServer } from "../src/server/start-server.js";
import { makeCertificates } from "./support/certificates.js";
import { FakeHub } from "./support/fake-hub.js";
import { patternedBytes, sha256 } from "./support/source-dir.js";
import { ModelStatus, PullPolicy } from "../generated/modelcache/v1/model_cache.js";
import { FIXTURE_DIR, type TestServer, call, modelSpec, pull, pullOk, startTestServer } from "./support/test-server.js";

const REPO = "acme/tiny-minilm";
const BIG = 8 * 1024 * 1024;
const big = patternedBytes(BIG);

/** A hub, and a server with the hub endpoint on whose model "minilm" (REPO at main) is installed from it. */
async function scene(options: { revision?: string; tokens?: AccessTokens; pullPolicy?: PullPolicy; pulled?: boolean } = {}): Promise<{ hub: FakeHub; t: TestServer; base: string; close(): Promise<void> }> {
  const hub = await FakeHub.serve(REPO, FIXTURE_DIR, { "onnx/model.onnx": big });
  const t = await startTestServer({ hubUrl: hub.url, hubListen: "127.0.0.1:0", metricsListen: "127.0.0.1:0", authTokens: options.tokens });
  const headers = new (await import("@grpc/grpc-js")).Metadata();
  if (options.tokens) headers.set("authorization", `Bearer ${ADMIN}`);
  await call(t.client, "registerModel", { model: modelSpec({ source: REPO, revision: options.revision === "commit" ? hub.commit : "main", pullPolicy: options.pullPolicy ?? PullPolicy.PULL_POLICY_UNSPECIFIED }) }, headers);
  if (options.pulled ?? !options.tokens) {
    const outcome = await pull(t.client, { name: "minilm" }, { metadata: headers });
    expect(outcome.error).to.equal(undefined);
  }
  return {
    hub,
    t,
    base: `http://${t.server.hubAddress}`,
    async close() {
      await t.close();
      await hub.close();
    },
  };
}

const ADMIN = "mct_admin-token";
const CONSUMER = "mct_consumer-token";
const READER = "mct_reader-token";
const digest = (token: string) => createHash("sha256").update(token).digest("hex");

/** Descriptors of this process (the in-process server's) open on a path ending with `suffix`. */
async function openFilesEndingWith(suffix: string): Promise<number> {
  const links = await Promise.all((await readdir("/proc/self/fd")).map((fd) => readlink(`/proc/self/fd/${fd}`).catch(() => "")));
  return links.filter((link) => link.endsWith(suffix)).length;
}

/** Whether a TCP connection to host:port is accepted. */
function accepts(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, host, () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/** The files the pull installed: every hub file but .gitattributes. */
const servedFiles = (hub: FakeHub) => hub.files.filter((f) => !f.path.startsWith("."));

describe("the hub endpoint", () => {
  let s: Awaited<ReturnType<typeof scene>>;
  before(async () => {
    s = await scene();
  });
  after(async () => {
    await s?.close();
  });
  const get = (path: string, init?: RequestInit) => fetch(`${s.base}${path}`, init);

  it("answers model info for the repository, by branch name, by commit and for HEAD", async () => {
    for (const path of [`/api/models/${REPO}`, `/api/models/${REPO}/revision/main`, `/api/models/${REPO}/revision/${s.hub.commit}`, `/api/models/${REPO}/revision/HEAD`]) {
      const res = await get(path);
      expect(res.status, path).to.equal(200);
      expect(res.headers.get("content-type")).to.equal("application/json");
      const info = (await res.json()) as { id: string; modelId: string; sha: string; private: boolean; siblings: { rfilename: string; size: number }[] };
      expect(info).to.include({ id: REPO, modelId: REPO, sha: s.hub.commit, private: false });
      expect(info.siblings).to.deep.equal(servedFiles(s.hub).map((f) => ({ rfilename: f.path, size: f.bytes.length })));
    }
  });

  it("answers 404 with RepoNotFound, RevisionNotFound or EntryNotFound and a JSON error", async () => {
    const cases: [string, string, string?][] = [
      [`/api/models/acme/unknown`, "RepoNotFound"],
      [`/api/models/${REPO}/revision/v9`, "RevisionNotFound"],
      [`/api/models/${REPO}/tree/0000000000000000000000000000000000000000`, "RevisionNotFound"],
      [`/${REPO}/resolve/main/missing.bin`, "EntryNotFound"],
      [`/${REPO}/resolve/main/..%2F..%2Fmanifest.json`, "EntryNotFound"],
      [`/${REPO}/resolve/main/%2Fetc%2Fpasswd`, "EntryNotFound"],
      [`/${REPO}/resolve/main/manifest.json`, "EntryNotFound"],
      [`/${REPO}/resolve/main/.gitattributes`, "EntryNotFound"],
      [`/${REPO}/resolve/main/onnx%2F..%2Fconfig.json`, "EntryNotFound"],
      [`/api/models/${REPO}/tree/main/nowhere`, "EntryNotFound"],
    ];
    for (const [path, code] of cases) {
      const res = await get(path);
      expect(res.status, path).to.equal(404);
      expect(res.headers.get("x-error-code"), path).to.equal(code);
      expect(((await res.json()) as { error: string }).error, path).to.be.a("string").and.not.equal("");
    }
    // a HEAD says as much, without a body
    const head = await get(`/${REPO}/resolve/main/missing.bin`, { method: "HEAD" });
    expect(head.status).to.equal(404);
    expect(head.headers.get("x-error-code")).to.equal("EntryNotFound");
  });

  it("lists the tree: one level, a directory, every level with recursive, git blob ids and LFS sha256s", async () => {
    const top = (await (await get(`/api/models/${REPO}/tree/main`)).json()) as { type: string; path: string }[];
    const topNames = [...new Set(servedFiles(s.hub).map((f) => f.path.split("/")[0]!))].sort();
    expect(top.map((e) => e.path)).to.deep.equal(topNames);
    expect(top.find((e) => e.path === "onnx")!.type).to.equal("directory");
    const onnx = await (await get(`/api/models/${REPO}/tree/${s.hub.commit}/onnx`)).json();
    expect(onnx).to.deep.equal([{ type: "file", path: "onnx/model.onnx", size: BIG, oid: s.hub.file("onnx/model.onnx").sha256, lfs: { oid: s.hub.file("onnx/model.onnx").sha256, size: BIG, pointerSize: 132 } }]);
    const all = (await (await get(`/api/models/${REPO}/tree/main?recursive=true`)).json()) as { type: string; path: string; size: number; oid: string; lfs?: { oid: string } }[];
    const files = all.filter((e) => e.type === "file");
    expect(files.map((e) => e.path)).to.deep.equal(servedFiles(s.hub).map((f) => f.path));
    for (const entry of files) {
      const file = s.hub.file(entry.path);
      expect(entry.size).to.equal(file.bytes.length);
      // the hub listed a git blob id for its small files, a sha256 for its LFS files
      expect(entry.oid, entry.path).to.equal(file.lfs ? file.sha256 : file.blobId);
      expect(entry.lfs?.oid, entry.path).to.equal(file.lfs ? file.sha256 : undefined);
    }
    expect(all.filter((e) => e.type === "directory").map((e) => e.path)).to.deep.equal(["1_Pooling", "onnx"]);
  });

  it("answers paths-info for a JSON or a form body, leaving out paths it does not have", async () => {
    const json = await get(`/api/models/${REPO}/paths-info/main`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ paths: ["config.json", "missing", "onnx"], expand: true }) });
    expect(json.status).to.equal(200);
    const entries = (await json.json()) as { type: string; path: string; oid: string; lastCommit?: { id: string } }[];
    expect(entries.map((e) => [e.type, e.path])).to.deep.equal([["file", "config.json"], ["directory", "onnx"]]);
    expect(entries[0]!.oid).to.equal(s.hub.file("config.json").blobId);
    expect(entries[0]!.lastCommit!.id).to.equal(s.hub.commit);
    const form = await get(`/api/models/${REPO}/paths-info/${s.hub.commit}`, { method: "POST", body: new URLSearchParams([["paths", "onnx/model.onnx"], ["paths", "tokenizer.json"]]) });
    const formEntries = (await form.json()) as { path: string; lastCommit?: unknown }[];
    expect(formEntries.map((e) => e.path)).to.deep.equal(["onnx/model.onnx", "tokenizer.json"]);
    expect(formEntries[0]!.lastCommit).to.equal(undefined);
  });

  it("serves a file with the hub's headers, byte for byte, and HEAD without a body", async () => {
    const file = s.hub.file("onnx/model.onnx");
    for (const method of ["GET", "HEAD"]) {
      const res = await get(`/${REPO}/resolve/main/onnx/model.onnx`, { method });
      expect(res.status).to.equal(200);
      expect(res.headers.get("x-repo-commit")).to.equal(s.hub.commit);
      expect(res.headers.get("etag")).to.equal(`"${file.sha256}"`);
      expect(res.headers.get("x-linked-etag")).to.equal(`"${file.sha256}"`);
      expect(res.headers.get("x-linked-size")).to.equal(String(BIG));
      expect(res.headers.get("content-length")).to.equal(String(BIG));
      expect(res.headers.get("accept-ranges")).to.equal("bytes");
      const body = Buffer.from(await res.arrayBuffer());
      if (method === "GET") expect(sha256(body)).to.equal(file.sha256);
      else expect(body.length).to.equal(0);
    }
    const small = await get(`/${REPO}/resolve/${s.hub.commit}/1_Pooling/config.json`);
    expect(Buffer.from(await small.arrayBuffer()).equals(s.hub.file("1_Pooling/config.json").bytes)).to.equal(true);
  });

  it("answers ranges A-B, A- and -N with 206 and Content-Range, and 416 for a range outside the file", async () => {
    const path = `/${REPO}/resolve/main/onnx/model.onnx`;
    const cases: [string, number, number][] = [
      ["bytes=0-0", 0, 0],
      ["bytes=100-1123", 100, 1123],
      [`bytes=${BIG - 10}-`, BIG - 10, BIG - 1],
      ["bytes=-4096", BIG - 4096, BIG - 1],
      [`bytes=${BIG - 5}-${BIG + 100}`, BIG - 5, BIG - 1],
    ];
    for (const [range, start, end] of cases) {
      const res = await get(path, { headers: { range } });
      expect(res.status, range).to.equal(206);
      expect(res.headers.get("content-range"), range).to.equal(`bytes ${start}-${end}/${BIG}`);
      expect(res.headers.get("content-length"), range).to.equal(String(end - start + 1));
      expect(Buffer.from(await res.arrayBuffer()).equals(big.subarray(start, end + 1)), range).to.equal(true);
    }
    for (const range of [`bytes=${BIG}-`, "bytes=-0"]) {
      const res = await get(path, { headers: { range } });
      expect(res.status, range).to.equal(416);
      expect(res.headers.get("content-range")).to.equal(`bytes */${BIG}`);
      await res.arrayBuffer();
    }
  });

  it("closes the file when a client goes away midway through a download, and serves it whole afterwards", async () => {
    const path = `/${REPO}/resolve/main/onnx/model.onnx`;
    const before = await openFilesEndingWith("/onnx/model.onnx");
    await new Promise<void>((resolve, reject) => {
      const req = httpGet(`${s.base}${path}`, (res) => res.once("data", () => (req.destroy(), resolve())));
      req.once("error", (err: NodeJS.ErrnoException) => (req.destroyed ? resolve() : reject(err)));
    });
    // the server learns of the close asynchronously: wait for its descriptor to go, with a bound
    for (let polls = 0; (await openFilesEndingWith("/onnx/model.onnx")) > before; polls++) {
      if (polls > 500) throw new Error("the served file stayed open after its client went away");
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const res = await fetch(`${s.base}${path}`);
    expect(sha256(Buffer.from(await res.arrayBuffer()))).to.equal(s.hub.file("onnx/model.onnx").sha256);
  });

  it("serves stored content by digest on the OCI blob route, and BLOB_UNKNOWN for content it does not hold", async () => {
    const file = s.hub.file("onnx/model.onnx");
    const res = await get(`/v2/acme/anything/blobs/sha256:${file.sha256}`);
    expect(res.status).to.equal(200);
    expect(res.headers.get("docker-content-digest")).to.equal(`sha256:${file.sha256}`);
    expect(res.headers.get("content-length")).to.equal(String(BIG));
    expect(sha256(Buffer.from(await res.arrayBuffer()))).to.equal(file.sha256);
    const part = await get(`/v2/x/blobs/sha256:${file.sha256}`, { headers: { range: "bytes=10-19" } });
    expect(part.status).to.equal(206);
    expect(Buffer.from(await part.arrayBuffer()).equals(big.subarray(10, 20))).to.equal(true);
    const head = await get(`/v2/x/blobs/sha256:${file.sha256}`, { method: "HEAD" });
    expect(head.status).to.equal(200);
    expect(head.headers.get("content-length")).to.equal(String(BIG));
    const unknown = await get(`/v2/x/blobs/sha256:${"0".repeat(64)}`);
    expect(unknown.status).to.equal(404);
    expect(((await unknown.json()) as { errors: { code: string }[] }).errors[0]!.code).to.equal("BLOB_UNKNOWN");
  });

  it("counts requests by route and code, and the bytes of content sent", async () => {
    await (await get(`/${REPO}/resolve/main/config.json`)).arrayBuffer();
    const text = await (await fetch(`http://${s.t.server.metricsAddress}/metrics`)).text();
    expect(text).to.match(/modelcache_hub_requests_total\{route="resolve",code="200"\} [1-9]/);
    expect(text).to.match(/modelcache_hub_requests_total\{route="model_info",code="404"\} [1-9]/);
    const sent = Number(/^modelcache_hub_sent_bytes_total (\d+)/m.exec(text)?.[1]);
    expect(sent).to.be.at.least(BIG + s.hub.file("config.json").bytes.length);
  });

  it("records a use of the model it serves a file of", async () => {
    const asked = Date.now();
    await (await get(`/${REPO}/resolve/main/config.json`)).arrayBuffer();
    const used = (await call(s.t.client, "getModel", { name: "minilm" })).model!.lastUsedAt!;
    expect(used.getTime()).to.be.at.least(asked);
  });

  describe("with huggingface.js (@huggingface/hub) as the client", () => {
    let cacheDir: string;
    beforeEach(async () => {
      cacheDir = await mkdtemp(join(tmpdir(), "modelcache-hfjs-"));
    });
    afterEach(async () => {
      await rm(cacheDir, { recursive: true, force: true });
    });

    it("reads model info, lists the files and downloads them byte for byte", async () => {
      const info = await modelInfo({ name: REPO, hubUrl: s.base, additionalFields: ["sha"] });
      expect(info.name).to.equal(REPO);
      expect(info.sha).to.equal(s.hub.commit);
      const listed: { path: string; size: number; type: string }[] = [];
      for await (const entry of listFiles({ repo: REPO, hubUrl: s.base, recursive: true })) listed.push(entry);
      expect(listed.filter((e) => e.type === "file").map((e) => e.path)).to.deep.equal(servedFiles(s.hub).map((f) => f.path));
      for (const file of servedFiles(s.hub)) {
        const blob = await downloadFile({ repo: REPO, path: file.path, hubUrl: s.base });
        expect(blob, file.path).to.not.equal(null);
        expect(sha256(Buffer.from(await blob!.arrayBuffer())), file.path).to.equal(file.sha256);
      }
      expect(await downloadFile({ repo: REPO, path: "missing.bin", hubUrl: s.base })).to.equal(null);
    });

    it("downloads into its cache dir, one file and a whole snapshot, byte for byte", async () => {
      // it says "Downloading ..." on console.debug for every file
      const debug = console.debug;
      console.debug = () => undefined;
      let one: string;
      let snapshot: string;
      try {
        one = await downloadFileToCacheDir({ repo: REPO, path: "onnx/model.onnx", hubUrl: s.base, cacheDir });
        snapshot = await snapshotDownload({ repo: REPO, hubUrl: s.base, cacheDir });
      } finally {
        console.debug = debug;
      }
      expect(sha256(await readFile(one))).to.equal(s.hub.file("onnx/model.onnx").sha256);
      expect(snapshot).to.include(s.hub.commit);
      for (const file of servedFiles(s.hub)) expect(sha256(await readFile(join(snapshot, file.path))), file.path).to.equal(file.sha256);
    });
  });
});

describe("the hub endpoint, each test on its own server", () => {
  let s: Awaited<ReturnType<typeof scene>> | undefined;
  afterEach(async () => {
    await s?.close();
    s = undefined;
  });

  it("answers `main` with the one model of the repository when none names main", async () => {
    s = await scene({ revision: "commit" });
    const res = await fetch(`${s.base}/api/models/${REPO}/revision/main`);
    expect(res.status).to.equal(200);
    expect(((await res.json()) as { sha: string }).sha).to.equal(s.hub.commit);
    const file = await fetch(`${s.base}/${REPO}/resolve/main/config.json`);
    expect(file.headers.get("x-repo-commit")).to.equal(s.hub.commit);
    expect(Buffer.from(await file.arrayBuffer()).equals(s.hub.file("config.json").bytes)).to.equal(true);
    expect((await fetch(`${s.base}/api/models/${REPO}/revision/dev`)).headers.get("x-error-code")).to.equal("RevisionNotFound");
  });

  it("answers EntryNotFound saying so for a NEVER model that is not installed, and fetches nothing", async () => {
    s = await scene({ pullPolicy: PullPolicy.PULL_POLICY_NEVER, pulled: false });
    for (const path of [`/${REPO}/resolve/main/config.json`, `/api/models/${REPO}`, `/api/models/${REPO}/tree/main`]) {
      const res = await fetch(`${s.base}${path}`);
      expect(res.status, path).to.equal(404);
      expect(res.headers.get("x-error-code"), path).to.equal("EntryNotFound");
      expect(((await res.json()) as { error: string }).error, path).to.include("not installed").and.include("NEVER");
    }
    expect(s.hub.requests).to.deep.equal([]);
    expect((await call(s.t.client, "getModel", { name: "minilm" })).model!.status).to.equal(ModelStatus.MODEL_STATUS_REGISTERED);
  });

  it("installs an IF_MISSING model that is not installed, as ResolveModel would, and then serves it", async () => {
    s = await scene({ pullPolicy: PullPolicy.PULL_POLICY_IF_MISSING, pulled: false });
    const file = s.hub.file("onnx/model.onnx");
    const res = await fetch(`${s.base}/${REPO}/resolve/main/onnx/model.onnx`);
    expect(res.status).to.equal(200);
    expect(res.headers.get("x-repo-commit")).to.equal(s.hub.commit);
    expect(sha256(Buffer.from(await res.arrayBuffer()))).to.equal(file.sha256);
    // the file is served as soon as it is verified, maybe before the install is done: ResolveModel joins the pull under way
    await call(s.t.client, "resolveModel", { name: "minilm", pullPolicy: PullPolicy.PULL_POLICY_IF_MISSING, leaseSeconds: 0, credentialAlias: "" });
    const { model } = await call(s.t.client, "getModel", { name: "minilm" });
    expect(model).to.include({ status: ModelStatus.MODEL_STATUS_INSTALLED, resolvedCommit: s.hub.commit });
    // installed once: later requests are served from the install
    const fetched = s.hub.sent("onnx/model.onnx");
    expect(fetched).to.equal(BIG);
    await (await fetch(`${s.base}/${REPO}/resolve/main/onnx/model.onnx`)).arrayBuffer();
    expect(s.hub.sent("onnx/model.onnx")).to.equal(fetched);
  });

  it("requires a consumer's or an admin's token when the server has tokens: 401 without or unknown, 403 for a reader", async () => {
    const tokens = AccessTokens.parse(
      JSON.stringify({
        tokens: [
          { name: "ops", sha256: digest(ADMIN), role: "admin" },
          { name: "svc", sha256: digest(CONSUMER), role: "consumer" },
          { name: "dash", sha256: digest(READER), role: "reader" },
        ],
      }),
    );
    s = await scene({ tokens });
    const path = `${s.base}/api/models/${REPO}`;
    const none = await fetch(path);
    expect(none.status).to.equal(401);
    expect(((await none.json()) as { error: string }).error).to.include("Bearer");
    const unknown = await fetch(path, { headers: { authorization: "Bearer mct_nobody" } });
    expect(unknown.status).to.equal(401);
    await unknown.arrayBuffer();
    const reader = await fetch(path, { headers: { authorization: `Bearer ${READER}` } });
    expect(reader.status).to.equal(403);
    expect(((await reader.json()) as { error: string }).error).to.include("consumer");
    for (const token of [CONSUMER, ADMIN]) {
      const res = await fetch(path, { headers: { authorization: `Bearer ${token}` } });
      expect(res.status, token).to.equal(200);
      expect(((await res.json()) as { sha: string }).sha).to.equal(s.hub.commit);
    }
    // the blob route too
    expect((await fetch(`${s.base}/v2/x/blobs/sha256:${"0".repeat(64)}`)).status).to.equal(401);
  });

  it("finishes a download under way when the model is dropped meanwhile", async () => {
    // NEVER: the request after the drop must not install it again
    s = await scene({ pullPolicy: PullPolicy.PULL_POLICY_NEVER, pulled: true });
    const res = await fetch(`${s.base}/${REPO}/resolve/main/onnx/model.onnx`);
    expect(res.status).to.equal(200);
    const reader = res.body!.getReader();
    const chunks: Buffer[] = [];
    const first = await reader.read();
    chunks.push(Buffer.from(first.value!));
    expect((await call(s.t.client, "dropCache", { name: "minilm", force: true })).removed).to.equal(true);
    await stat(join(s.t.cacheRoot, "minilm", "onnx", "model.onnx")).then(
      () => expect.fail("the install is still there"),
      (err: NodeJS.ErrnoException) => expect(err.code).to.equal("ENOENT"),
    );
    for (let next = await reader.read(); !next.done; next = await reader.read()) chunks.push(Buffer.from(next.value));
    const body = Buffer.concat(chunks);
    expect(body.length).to.equal(BIG);
    expect(sha256(body)).to.equal(s.hub.file("onnx/model.onnx").sha256);
    // and the next request says it is gone
    const after = await fetch(`${s.base}/${REPO}/resolve/main/onnx/model.onnx`);
    expect(after.status).to.equal(404);
    expect(after.headers.get("x-error-code")).to.equal("EntryNotFound");
    await after.arrayBuffer();
  });

  it("finishes a download under way when a pull of a new commit replaces the install meanwhile", async () => {
    s = await scene();
    const old = s.hub.file("onnx/model.onnx");
    const res = await fetch(`${s.base}/${REPO}/resolve/main/onnx/model.onnx`);
    const reader = res.body!.getReader();
    const chunks: Buffer[] = [Buffer.from((await reader.read()).value!)];
    const replacement = Buffer.from(big).reverse();
    const next = s.hub.commitFile("onnx/model.onnx", replacement);
    expect((await pullOk(s.t.client, { name: "minilm" })).at(-1)!.completed!.manifest!.resolvedCommit).to.equal(next);
    for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) chunks.push(Buffer.from(chunk.value));
    expect(sha256(Buffer.concat(chunks))).to.equal(old.sha256);
    const now = await fetch(`${s.base}/${REPO}/resolve/main/onnx/model.onnx`);
    expect(now.headers.get("x-repo-commit")).to.equal(next);
    expect(sha256(Buffer.from(await now.arrayBuffer()))).to.equal(sha256(replacement));
  });

  it("closes a kept-alive connection once the download on it ends while the server stops, and answers no further request on it", async () => {
    const local = await scene();
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const url = `${local.base}/${REPO}/resolve/main/onnx/model.onnx`;
      const first = await new Promise<IncomingMessage>((resolve, reject) => httpGet(url, { agent }, resolve).once("error", reject));
      // the download is under way (more than the sockets hold) when the server begins to stop
      first.pause();
      const stopping = local.t.server.close();
      const [host, port] = local.t.server.hubAddress!.split(":");
      for (let polls = 0; await accepts(host!, Number(port)); polls++) {
        if (polls > 500) throw new Error("the hub endpoint still accepted connections while the server stopped");
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      const chunks: Buffer[] = [];
      for await (const chunk of first) chunks.push(chunk as Buffer);
      expect(sha256(Buffer.concat(chunks))).to.equal(local.hub.file("onnx/model.onnx").sha256);
      // the connection it came on is closed, not kept for another request
      const second = await new Promise<number | string>((resolve) => {
        httpGet(url, { agent }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        }).once("error", (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
      });
      expect(second).to.be.a("string");
      await stopping;
    } finally {
      agent.destroy();
      await local.close();
    }
  });

  it("serves HTTPS with the server's TLS files, and on a unix socket", async () => {
    const certs = await makeCertificates();
    const socketDir = await mkdtemp(join(tmpdir(), "modelcache-hubsock-"));
    const answer = (res: import("node:http").IncomingMessage) =>
      new Promise<{ status: number; code: string | undefined }>((resolve, reject) => {
        res.on("data", () => undefined);
        res.on("end", () => resolve({ status: res.statusCode!, code: res.headers["x-error-code"] as string | undefined }));
        res.on("error", reject);
      });
    try {
      const secure = await startTestServer({ hubListen: "127.0.0.1:0", tls: { cert: certs.serverCert, key: certs.serverKey } });
      try {
        const [host, port] = secure.server.hubAddress!.split(":");
        const ca = await readFile(certs.ca);
        const res = await new Promise<import("node:http").IncomingMessage>((resolve, reject) => httpsGet({ host, port: Number(port), path: `/api/models/${REPO}`, ca }, resolve).on("error", reject));
        expect(await answer(res)).to.deep.equal({ status: 404, code: "RepoNotFound" });
      } finally {
        await secure.close();
      }
      const socketPath = join(socketDir, "hub.sock");
      const local = await startTestServer({ hubListen: `unix:${socketPath}` });
      try {
        expect(local.server.hubAddress).to.equal(`unix:${socketPath}`);
        const res = await new Promise<import("node:http").IncomingMessage>((resolve, reject) => httpGet({ socketPath, path: `/api/models/${REPO}` }, resolve).on("error", reject));
        expect(await answer(res)).to.deep.equal({ status: 404, code: "RepoNotFound" });
      } finally {
        await local.close();
      }
      // the socket goes with the server
      await stat(socketPath).then(
        () => expect.fail("the socket is still there"),
        (err: NodeJS.ErrnoException) => expect(err.code).to.equal("ENOENT"),
      );
    } finally {
      await certs.cleanup();
      await rm(socketDir, { recursive: true, force: true });
    }
  });

  it("refuses to start with --hub-listen beyond loopback without auth, naming the flag", async () => {
    const dataDir = await mkdtemp(join(tmpdir(), "modelcache-hubexposed-"));
    try {
      const failed = await startServer({ listen: "127.0.0.1:0", dataDir, hubListen: "0.0.0.0:0", logger: pino({ level: "silent" }), offline: true }).then(
        async (server) => {
          await server.close();
          return undefined;
        },
        (err: Error) => err,
      );
      expect(failed?.message).to.include("--hub-listen").and.include("--auth-tokens");
      const malformed = await startServer({ listen: "127.0.0.1:0", dataDir, hubListen: "nowhere", logger: pino({ level: "silent" }), offline: true }).then(
        async (server) => {
          await server.close();
          return undefined;
        },
        (err: Error) => err,
      );
      expect(malformed?.message).to.include("--hub-listen 'nowhere' is malformed");
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  for (const warm of [true, false]) {
    it(`lets a second modelcache install the model through it, ${warm ? "warm" : "cold (the first pulls it on demand)"}, each LFS byte fetched from the hub once`, async () => {
      s = await scene({ pulled: warm });
      const second = await startTestServer({ hubUrl: s.base });
      try {
        await call(second.client, "registerModel", { model: modelSpec({ source: REPO, revision: "main" }) });
        const events = await pullOk(second.client, { name: "minilm" });
        const manifest = events.at(-1)!.completed!.manifest!;
        expect(manifest.resolvedCommit).to.equal(s.hub.commit);
        expect(manifest.files.map((f) => [f.path, f.sha256])).to.deep.equal(servedFiles(s.hub).map((f) => [f.path, f.sha256]));
        for (const file of servedFiles(s.hub)) expect(sha256(await readFile(join(second.cacheRoot, "minilm", file.path))), file.path).to.equal(file.sha256);
        for (const file of servedFiles(s.hub).filter((f) => f.lfs)) expect(s.hub.sent(file.path), file.path).to.equal(file.bytes.length);
      } finally {
        await second.close();
      }
    });
  }

  it("lets a second modelcache pull through it with a consumer token stored under a credential alias", async () => {
    const tokens = AccessTokens.parse(
      JSON.stringify({
        tokens: [
          { name: "ops", sha256: digest(ADMIN), role: "admin" },
          { name: "node-7", sha256: digest(CONSUMER), role: "consumer" },
        ],
      }),
    );
    s = await scene({ tokens, pulled: true });
    const second = await startTestServer({ hubUrl: s.base });
    try {
      await call(second.client, "putSecret", { alias: "rack", value: CONSUMER });
      await call(second.client, "registerModel", { model: modelSpec({ source: REPO, revision: "main", credentialAlias: "rack" }) });
      const manifest = (await pullOk(second.client, { name: "minilm" })).at(-1)!.completed!.manifest!;
      expect(manifest.resolvedCommit).to.equal(s.hub.commit);
      for (const file of servedFiles(s.hub)) expect(sha256(await readFile(join(second.cacheRoot, "minilm", file.path))), file.path).to.equal(file.sha256);
      // without the alias, the first server refuses it
      await call(second.client, "registerModel", { model: modelSpec({ name: "anonymous", source: REPO, revision: "main" }) });
      const refused = await pull(second.client, { name: "anonymous" });
      expect(refused.error?.details).to.include("PutSecret");
    } finally {
      await second.close();
    }
  });

  it("asks the source of an installed ALWAYS model for its revision once, not on every request, and serves the new commit", async () => {
    s = await scene({ pullPolicy: PullPolicy.PULL_POLICY_ALWAYS, pulled: true });
    const first = s.hub.commit;
    const next = s.hub.commitFile("config.json", '{"hidden_size": 384, "changed": true}');
    const revisionAsks = () => s!.hub.requests.filter((r) => r.path.startsWith(`/api/models/${REPO}/revision/`)).length;
    const asksBefore = revisionAsks();
    const info = async () => ((await (await fetch(`${s!.base}/api/models/${REPO}`)).json()) as { sha: string }).sha;
    expect(await info()).to.equal(next);
    // the check, then the pull of the new commit
    const asked = revisionAsks();
    expect(asked).to.be.above(asksBefore);
    const file = await fetch(`${s.base}/${REPO}/resolve/main/config.json`);
    expect(file.headers.get("x-repo-commit")).to.equal(next);
    expect(await file.text()).to.equal('{"hidden_size": 384, "changed": true}');
    expect(await info()).to.equal(next);
    // within the minute: served from the install, the source not asked again
    expect(revisionAsks()).to.equal(asked);
    expect(next).to.not.equal(first);
  });

  it("answers the listings of a model it is pulling as soon as the source's listing is known, and a file as soon as it is verified", async () => {
    s = await scene({ pullPolicy: PullPolicy.PULL_POLICY_IF_MISSING, pulled: false });
    let letGo = () => undefined as void;
    s.hub.faults.hold.set("onnx/model.onnx", new Promise<void>((resolve) => (letGo = resolve)));
    try {
      const info = (await (await fetch(`${s.base}/api/models/${REPO}/revision/main`)).json()) as { sha: string; siblings: { rfilename: string; size: number }[] };
      expect(info.sha).to.equal(s.hub.commit);
      expect(info.siblings).to.deep.equal(servedFiles(s.hub).map((f) => ({ rfilename: f.path, size: f.bytes.length })));
      const tree = (await (await fetch(`${s.base}/api/models/${REPO}/tree/${s.hub.commit}?recursive=true`)).json()) as { type: string; path: string; oid: string; lfs?: { oid: string } }[];
      for (const entry of tree.filter((e) => e.type === "file")) {
        const file = s.hub.file(entry.path);
        expect(entry.oid, entry.path).to.equal(file.lfs ? file.sha256 : file.blobId);
        expect(entry.lfs?.oid, entry.path).to.equal(file.lfs ? file.sha256 : undefined);
      }
      expect(tree.filter((e) => e.type === "file").map((e) => e.path)).to.deep.equal(servedFiles(s.hub).map((f) => f.path));
      // the held file's sha256 is in the listing: its HEAD needs no more
      const head = await fetch(`${s.base}/${REPO}/resolve/main/onnx/model.onnx`, { method: "HEAD" });
      expect(head.status).to.equal(200);
      expect(head.headers.get("etag")).to.equal(`"${s.hub.file("onnx/model.onnx").sha256}"`);
      expect(head.headers.get("x-linked-size")).to.equal(String(BIG));
      expect(head.headers.get("content-length")).to.equal(String(BIG));
      expect(head.headers.get("x-repo-commit")).to.equal(s.hub.commit);
      const res = await fetch(`${s.base}/${REPO}/resolve/main/config.json`);
      expect(res.status).to.equal(200);
      expect(res.headers.get("x-repo-commit")).to.equal(s.hub.commit);
      expect(res.headers.get("etag")).to.equal(`"${s.hub.file("config.json").sha256}"`);
      expect(Buffer.from(await res.arrayBuffer()).equals(s.hub.file("config.json").bytes)).to.equal(true);
      // the big file is still held by the hub: the model is not installed yet
      expect((await call(s.t.client, "getModel", { name: "minilm" })).model!.status).to.equal(ModelStatus.MODEL_STATUS_REGISTERED);
      expect(s.t.server.runtime.pulls.find("minilm")).to.not.equal(undefined);
    } finally {
      letGo();
    }
    // the pull went on after the answer: joined here, it installs the whole model
    await pullOk(s.t.client, { name: "minilm" });
    const big = await fetch(`${s.base}/${REPO}/resolve/main/onnx/model.onnx`);
    expect(sha256(Buffer.from(await big.arrayBuffer()))).to.equal(s.hub.file("onnx/model.onnx").sha256);
    expect(s.hub.sent("onnx/model.onnx")).to.equal(BIG);
  });

  it("answers 503 naming the upstream's refusal when the pull it starts is refused, never 401, and leaves the model as it was", async () => {
    s = await scene({ pullPolicy: PullPolicy.PULL_POLICY_IF_MISSING, pulled: false });
    s.hub.faults.token = "hf_private";
    for (const path of [`/api/models/${REPO}`, `/${REPO}/resolve/main/config.json`]) {
      const res = await fetch(`${s.base}${path}`);
      expect(res.status, path).to.equal(503);
      expect(((await res.json()) as { error: string }).error, path).to.include("refused upstream").and.include("PutSecret");
    }
    expect((await call(s.t.client, "getModel", { name: "minilm" })).model!.status).to.equal(ModelStatus.MODEL_STATUS_REGISTERED);
  });
});
