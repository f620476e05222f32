// Peers (--peers): a pull fetches content by digest from other servers' hub
// endpoints before its upstream, verifies every byte and falls back on any
// doubt; a server answers peers from its store only. Real servers on
// loopback, a fake hub that counts what it sends, and small HTTP servers of
// the test's own playing lying, dead and stalled peers.
import { createHash } from "node:crypto";
import { mkdtemp, readFile, readdir, rm, stat, writeFile } from "node:fs/promises";
import { type IncomingMessage, type Server, type ServerResponse, createServer } from "node:http";
import { type AddressInfo, type Socket, connect, createServer as createTcpServer } from "node:net";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { Metadata } from "@grpc/grpc-js";
import { expect } from "chai";
import { AccessTokens } from "../src/auth/access-tokens.js";
import { rendezvousOrder } from "../src/peers/rendezvous-order.js";
import { isOwnEndpoint, ownEndpointOf } from "../src/peers/own-endpoint.js";
import { DNS_REFRESH_MS, PeerList } from "../src/peers/peer-list.js";
import { parsePeerList } from "../src/peers/parse-peer-list.js";
import { pino } from "pino";
import type { ServerOptions } from "../src/server/start-server.js";
import { resolveSettings } from "../src/server/server-settings.js";
import type { ModelCacheError } from "../src/errors.js";
import { CacheStatus, ModelStatus } from "../generated/modelcache/v1/model_cache.js";
import { FakeHub, type HubFileEntry } from "./support/fake-hub.js";
import { FakeS3, S3_CREDENTIALS, sha256hex } from "./support/fake-s3.js";
import { captureLogs } from "./support/log-capture.js";
import { spawnServer } from "./support/child-server.js";
import { runCli } from "./support/run-cli.js";
import { OciRegistry, registryAvailable } from "./support/oci-registry.js";
import { FIXTURE_DIR, type TestServer, call, modelSpec, pull, startTestServer } from "./support/test-server.js";
import { patternedBytes } from "./support/source-dir.js";

const REPO = "acme/tiny-minilm";
const BIG = 3 * 1024 * 1024;
const big = patternedBytes(BIG);

/** Servers share this process's event loop with the test: a peer that must answer gets more than the 200 ms a HEAD gets in production. */
const HEAD_BUDGET_MS = 5_000;

const ADMIN = "mct_admin-token";
const CONSUMER = "mct_consumer-token";
const digest = (token: string) => createHash("sha256").update(token).digest("hex");

/** The files of the hub the pull installs that are LFS files: their sha256 is known before download. */
const lfsFiles = (hub: FakeHub): HubFileEntry[] => hub.files.filter((f) => f.lfs && !f.path.startsWith("."));
const lfsBytes = (hub: FakeHub) => lfsFiles(hub).reduce((sum, f) => sum + f.bytes.length, 0);

/** A server with the hub endpoint and metrics, pulling from `hub`, with the model "minilm" registered (REPO at main). */
async function node(hub: FakeHub, options: Partial<ServerOptions> = {}, metadata = new Metadata()): Promise<TestServer> {
  const t = await startTestServer({ hubUrl: hub.url, hubListen: "127.0.0.1:0", metricsListen: "127.0.0.1:0", peerHeadBudgetMs: HEAD_BUDGET_MS, ...options });
  await call(t.client, "registerModel", { model: modelSpec({ source: REPO }) }, metadata);
  return t;
}

async function pullMinilm(t: TestServer, metadata = new Metadata()) {
  const outcome = await pull(t.client, { name: "minilm" }, { metadata });
  if (outcome.error) throw outcome.error;
  return outcome.events.at(-1)!.completed!;
}

/** The value of a metric sample (0 when absent) on `t`'s /metrics. */
async function metric(t: TestServer, sample: string): Promise<number> {
  const page = await (await fetch(`http://${t.server.metricsAddress}/metrics`)).text();
  const line = page.split("\n").find((l) => l.startsWith(`${sample} `));
  return line === undefined ? 0 : Number(line.slice(sample.length + 1));
}

const peerUrl = (t: TestServer) => `http://${t.server.hubAddress}`;

/** An HTTP server of the test's own on loopback; `requests` records method and path of each request. */
/**
 * A peer holding `file` alone: HEAD answers at once, each GET is answered by
 * `send` once the test calls letGo (gotGet: the first GET arrived).
 */
async function gatedPeer(file: { sha256: string; bytes: Buffer }, send: (req: IncomingMessage, res: ServerResponse) => void) {
  let asked!: () => void;
  const gotGet = new Promise<void>((resolve) => (asked = resolve));
  let letGo!: () => void;
  const gate = new Promise<void>((resolve) => (letGo = resolve));
  const peer = await httpPeer((req, res) => {
    if (!req.url?.endsWith(file.sha256)) return void res.writeHead(404).end();
    if (req.method === "HEAD") return void res.writeHead(200, { "content-length": String(file.bytes.length) }).end();
    asked();
    void gate.then(() => send(req, res));
  });
  return { peer, gotGet, letGo };
}

async function httpPeer(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ url: string; requests: string[]; ranges: (string | undefined)[]; close(): Promise<void> }> {
  const requests: string[] = [];
  const ranges: (string | undefined)[] = [];
  const server: Server = createServer((req, res) => {
    requests.push(`${req.method} ${req.url}`);
    ranges.push(req.headers.range);
    handler(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    ranges,
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/**
 * A peer of the test's own serving the hub's LFS files by digest, with
 * ranges: `lie` sends bytes of the right length but the wrong content;
 * `dropAfter` cuts the first GET of the content after that many bytes;
 * `goneOnce` answers the first GET 404, as a peer whose content went between
 * the HEAD and the GET.
 */
async function contentPeer(hub: FakeHub, options: { lie?: boolean; dropAfter?: number; goneOnce?: boolean }) {
  const bySha = new Map(lfsFiles(hub).map((f) => [f.sha256, f]));
  let drop = options.dropAfter;
  let gone = options.goneOnce === true;
  return httpPeer((req, res) => {
    const file = bySha.get(/sha256:([0-9a-f]{64})$/.exec(req.url ?? "")?.[1] ?? "");
    if (!file) return void res.writeHead(404).end();
    if (gone && req.method === "GET") {
      gone = false;
      return void res.writeHead(404).end();
    }
    const bytes = options.lie ? Buffer.alloc(file.bytes.length, 7) : file.bytes;
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? "");
    const start = range ? Number(range[1]) : 0;
    const end = range && range[2] !== "" ? Number(range[2]) + 1 : bytes.length;
    res.writeHead(range ? 206 : 200, { "content-length": String(end - start), ...(range ? { "content-range": `bytes ${start}-${end - 1}/${bytes.length}` } : {}) });
    if (req.method === "HEAD") return void res.end();
    if (drop !== undefined && end - start > drop) {
      const cut = drop;
      drop = undefined;
      res.write(bytes.subarray(start, start + cut), () => res.destroy());
      return;
    }
    res.end(bytes.subarray(start, end));
  });
}

/** A port nothing listens on (bound, then closed). */
async function freePort(): Promise<number> {
  const server = createTcpServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe("peers", () => {
  const cleanups: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });
  const hubServing = async () => {
    const hub = await FakeHub.serve(REPO, FIXTURE_DIR, { "onnx/model.onnx": big });
    cleanups.push(() => hub.close());
    return hub;
  };
  const started = async (hub: FakeHub, options: Partial<ServerOptions> = {}, metadata?: Metadata) => {
    const t = await node(hub, options, metadata);
    cleanups.push(() => t.close());
    return t;
  };

  it("fetches every LFS file a peer holds from that peer: the hub sends none of their bytes again, and both sides count them", async () => {
    const hub = await hubServing();
    const a = await started(hub);
    await pullMinilm(a);
    const sentByHub = lfsFiles(hub).map((f) => hub.sent(f.path));
    expect(sentByHub).to.deep.equal(lfsFiles(hub).map((f) => f.bytes.length));
    const logs = captureLogs();
    // 1 MiB ranges: the large file comes from the peer in segments, as from a hub
    const b = await started(hub, { peers: peerUrl(a), parallelRangeMinBytes: 1024 * 1024, parallelRangeBelowBytesPerSecond: Infinity, logger: logs.logger });
    const completed = await pullMinilm(b);
    expect(lfsFiles(hub).map((f) => hub.sent(f.path)), "bytes the hub sent per LFS file").to.deep.equal(sentByHub);
    expect(completed.peerBytes).to.equal(lfsBytes(hub));
    expect(await metric(b, 'modelcache_peer_bytes_total{direction="in"}')).to.equal(lfsBytes(hub));
    expect(await metric(a, 'modelcache_peer_bytes_total{direction="out"}')).to.equal(lfsBytes(hub));
    expect(logs.lines.find((l) => l.msg === "pull finished")).to.include({ model: "minilm", peerBytes: lfsBytes(hub) });
    // the install is whole: the files other than LFS ones came from the hub
    const info = await call(b.client, "inspectCache", { name: "minilm", deep: true });
    expect(info.status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
    expect(info.manifest!.files.map((f) => f.sha256).sort()).to.deep.equal(hub.files.filter((f) => !f.path.startsWith(".")).map((f) => f.sha256).sort());
  });

  it("with force compares the stored copies with a peer's bytes, not the hub's, and writes none of them again", async () => {
    const hub = await hubServing();
    const a = await started(hub);
    await pullMinilm(a);
    const b = await started(hub, { peers: peerUrl(a) });
    await pullMinilm(b);
    const sentByHub = lfsFiles(hub).map((f) => hub.sent(f.path));
    const large = lfsFiles(hub).find((f) => f.path === "onnx/model.onnx")!;
    const blob = join(b.cacheRoot, ".blobs", "sha256", large.sha256);
    const before = await stat(blob);
    const outBefore = await metric(a, 'modelcache_peer_bytes_total{direction="out"}');
    const outcome = await pull(b.client, { name: "minilm", force: true });
    expect(outcome.error).to.equal(undefined);
    expect(outcome.events.at(-1)!.completed!.peerBytes, "every LFS byte compared came from the peer").to.equal(lfsBytes(hub));
    expect(await metric(a, 'modelcache_peer_bytes_total{direction="out"}')).to.equal(outBefore + lfsBytes(hub));
    expect(lfsFiles(hub).map((f) => hub.sent(f.path)), "bytes the hub sent per LFS file").to.deep.equal(sentByHub);
    const after = await stat(blob);
    expect([after.ino, after.mtimeMs], "the stored copy was not written").to.deep.equal([before.ino, before.mtimeMs]);
    expect((await call(b.client, "inspectCache", { name: "minilm", deep: true })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
  });

  it("asks each file's peer by rendezvous order: with two peers holding everything, each sends the files it ranks first for", async () => {
    const hub = await hubServing();
    const a1 = await started(hub);
    const a2 = await started(hub);
    await pullMinilm(a1);
    await pullMinilm(a2);
    const sentByHub = lfsFiles(hub).map((f) => hub.sent(f.path));
    const b = await started(hub, { peers: `${peerUrl(a2)},${peerUrl(a1)}` });
    expect((await pullMinilm(b)).peerBytes).to.equal(lfsBytes(hub));
    expect(lfsFiles(hub).map((f) => hub.sent(f.path))).to.deep.equal(sentByHub);
    const ranked = (a: TestServer) => lfsFiles(hub).filter((f) => rendezvousOrder(f.sha256, [peerUrl(a1), peerUrl(a2)], 1)[0] === peerUrl(a));
    for (const a of [a1, a2]) {
      const expected = ranked(a).reduce((sum, f) => sum + f.bytes.length, 0);
      expect(await metric(a, 'modelcache_peer_bytes_total{direction="out"}')).to.equal(expected);
    }
  });

  it("skips a peer that sends other bytes for the rest of the pull, counts it, and installs from the hub", async () => {
    const second = Buffer.concat([big.subarray(1), big.subarray(0, 1)]);
    const hub = await FakeHub.serve(REPO, FIXTURE_DIR, { "onnx/model.onnx": big, "onnx/second.onnx": second });
    cleanups.push(() => hub.close());
    // right length, wrong bytes
    const liar = await contentPeer(hub, { lie: true });
    cleanups.push(() => liar.close());
    const logs = captureLogs();
    // one large file at a time (and beside it the small one): the liar is found out on the first large file,
    // before the second is started
    const b = await started(hub, { peers: liar.url, fileConcurrency: 1, logger: logs.logger });
    const completed = await pullMinilm(b);
    expect(completed.peerBytes).to.equal(0);
    expect(lfsFiles(hub).map((f) => hub.sent(f.path))).to.deep.equal(lfsFiles(hub).map((f) => f.bytes.length));
    // the small file may have been asked for beside the first large one, before the first lie was found
    expect(await metric(b, 'modelcache_peer_errors_total{reason="mismatch"}')).to.be.within(1, 2);
    const asked = liar.requests.map((r) => /sha256:([0-9a-f]{64})/.exec(r)![1]);
    expect(asked, liar.requests.join("\n")).to.not.include(hub.file("onnx/second.onnx").sha256);
    expect(liar.requests.filter((r) => r.startsWith("HEAD")).length).to.equal(new Set(asked).size);
    expect(logs.lines.some((l) => l.peer === liar.url && l.reason === "mismatch")).to.equal(true);
  });

  it("asks a peer whose content went between its HEAD and the GET again for the pull's other files: that is no peer error", async () => {
    const hub = await hubServing();
    const peer = await contentPeer(hub, { goneOnce: true });
    cleanups.push(() => peer.close());
    // one file at a time: the first file asked for is the one that went
    const b = await started(hub, { peers: peer.url, fileConcurrency: 1 });
    const completed = await pullMinilm(b);
    const first = lfsFiles(hub).find((f) => peer.requests[0]!.endsWith(f.sha256))!;
    const asked = lfsFiles(hub).filter((f) => peer.requests.some((r) => r.startsWith("HEAD") && r.endsWith(f.sha256)));
    expect(asked, peer.requests.join("\n")).to.have.length(lfsFiles(hub).length);
    expect(completed.peerBytes).to.equal(lfsBytes(hub) - first.bytes.length);
    expect(await metric(b, 'modelcache_peer_errors_total{reason="status"}')).to.equal(0);
  });

  it("sends every request of a pull to a peer at once, however many files are downloading: none waits behind another for a connection", async () => {
    // more files at once than one peer had connections for
    const shards: Record<string, Buffer> = {};
    for (let i = 0; i < 24; i++) shards[`shards/${String(i).padStart(2, "0")}.bin`] = Buffer.alloc(8192, i + 1);
    const hub = await FakeHub.serve(REPO, FIXTURE_DIR, shards);
    cleanups.push(() => hub.close());
    const files = lfsFiles(hub);
    // a peer that answers no GET before it has the GETs of all the files: a request held back by the
    // node's own connection limit would wait for the stall watch to give up on the others
    const waiting: (() => void)[] = [];
    const peer = await httpPeer((req, res) => {
      const file = files.find((f) => req.url?.endsWith(f.sha256));
      if (!file) return void res.writeHead(404).end();
      if (req.method === "HEAD") return void res.writeHead(200, { "content-length": String(file.bytes.length) }).end();
      waiting.push(() => res.writeHead(200, { "content-length": String(file.bytes.length) }).end(file.bytes));
      if (waiting.length === files.length) waiting.forEach((send) => send());
    });
    cleanups.push(() => peer.close());
    const b = await started(hub, { peers: peer.url, fileConcurrency: 32, peerStallMs: 2000 });
    const completed = await pullMinilm(b);
    expect(await metric(b, 'modelcache_peer_errors_total{reason="timeout"}')).to.equal(0);
    expect(completed.peerBytes).to.equal(lfsBytes(hub));
  });

  it("resumes a peer transfer whose connection dropped midway with a Range request for the missing bytes", async () => {
    const hub = await hubServing();
    // mid-block: the bytes received after the last whole MiB written count too
    const dropAfter = 1024 * 1024 + 320 * 1024;
    const peer = await contentPeer(hub, { dropAfter });
    cleanups.push(() => peer.close());
    const b = await started(hub, { peers: peer.url });
    const sentByHub = lfsFiles(hub).map((f) => hub.sent(f.path));
    expect((await pullMinilm(b)).peerBytes).to.equal(lfsBytes(hub));
    expect(sentByHub.every((bytes) => bytes === 0)).to.equal(true);
    expect(lfsFiles(hub).map((f) => hub.sent(f.path)), "the hub sent no LFS byte").to.deep.equal(sentByHub);
    const big = lfsFiles(hub).find((f) => f.path === "onnx/model.onnx")!;
    const gets = peer.requests.filter((r) => r.startsWith(`GET`) && r.endsWith(big.sha256));
    expect(gets).to.have.length(2);
    // from the byte after the last one received when the connection broke, never from the start
    const ranges = peer.ranges.filter((r) => r !== undefined);
    expect(ranges).to.deep.equal([`bytes=${dropAfter}-`]);
  });

  it("falls through a dead peer, one that never answers and one that stalls midway, and installs from the hub", async () => {
    const hub = await hubServing();
    const dead = `http://127.0.0.1:${await freePort()}`;
    // accepts connections, never answers
    const sockets: Socket[] = [];
    const silent = createTcpServer((socket) => void sockets.push(socket));
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    cleanups.push(async () => {
      sockets.forEach((s) => s.destroy());
      await new Promise((resolve) => silent.close(resolve));
    });
    // answers HEAD, then sends a few bytes of the content and nothing more until the test ends
    const release: (() => void)[] = [];
    const staller = await httpPeer((req, res) => {
      const file = lfsFiles(hub).find((f) => req.url?.endsWith(f.sha256));
      if (!file) return void res.writeHead(404).end();
      res.writeHead(200, { "content-length": String(file.bytes.length) });
      if (req.method === "HEAD") return void res.end();
      res.write(file.bytes.subarray(0, 10));
      release.push(() => res.destroy());
    });
    cleanups.push(() => staller.close());
    cleanups.push(async () => release.forEach((r) => r()));
    const peers = [dead, `http://127.0.0.1:${(silent.address() as AddressInfo).port}`, staller.url].join(",");
    // the contract's HEAD budget: the silent peer's HEAD ends after 200 ms
    const b = await started(hub, { peers, peerStallMs: 300, peerHeadBudgetMs: 200 });
    const completed = await pullMinilm(b);
    expect(completed.peerBytes).to.equal(0);
    expect(lfsFiles(hub).map((f) => hub.sent(f.path))).to.deep.equal(lfsFiles(hub).map((f) => f.bytes.length));
    expect(await metric(b, 'modelcache_peer_errors_total{reason="unreachable"}')).to.be.greaterThan(0);
    // the silent one's HEAD (200 ms budget) and the staller's transfer
    expect(await metric(b, 'modelcache_peer_errors_total{reason="timeout"}')).to.be.greaterThan(1);
    expect(staller.requests.some((r) => r.startsWith("GET"))).to.equal(true);
  });

  it("answers a peer only from its store: a blob it lacks is 404 and starts no pull, other routes are 404 EntryNotFound", async () => {
    const hub = await hubServing();
    const a = await started(hub);
    const file = lfsFiles(hub)[0]!;
    const peer = { "x-modelcache-peer": "1" };
    const blob = await fetch(`${peerUrl(a)}/v2/modelcache/blobs/sha256:${file.sha256}`, { headers: peer });
    expect(blob.status).to.equal(404);
    expect(((await blob.json()) as { errors: { code: string }[] }).errors[0]!.code).to.equal("BLOB_UNKNOWN");
    for (const path of [`/${REPO}/resolve/main/${file.path}`, `/api/models/${REPO}`, `/api/models/${REPO}/tree/main`, "/nowhere"]) {
      const res = await fetch(`${peerUrl(a)}${path}`, { headers: peer });
      expect(res.status, path).to.equal(404);
      expect(res.headers.get("x-error-code"), path).to.equal("EntryNotFound");
      await res.arrayBuffer();
    }
    expect(hub.requests, "requests the hub got").to.deep.equal([]);
  });

  it("never sends content it has condemned, also while the condemnation is still under way", async () => {
    const hub = await hubServing();
    const a = await started(hub);
    await pullMinilm(a);
    const file = lfsFiles(hub).find((f) => f.path === "model.safetensors")!;
    const { store } = a.server.runtime;
    // the content rots on disk: same size, other bytes
    const rotten = Buffer.from(file.bytes);
    rotten[0] ^= 0xff;
    await writeFile(store.blobPath(file.sha256), rotten);
    // the test holds the condemnation after the store forgot the content, before it leaves the store's name
    let entered!: () => void;
    const inListener = new Promise<void>((resolve) => (entered = resolve));
    let proceed!: () => void;
    const held = new Promise<void>((resolve) => (proceed = resolve));
    cleanups.push(async () => proceed());
    store.onCondemned(async () => {
      entered();
      await held;
    });
    const inspected = call(a.client, "inspectCache", { name: "minilm", deep: true });
    await inListener;
    const blob = await fetch(`${peerUrl(a)}/v2/modelcache/blobs/sha256:${file.sha256}`, { headers: { "x-modelcache-peer": "1" } });
    await blob.arrayBuffer();
    expect(blob.status, "a peer's GET of condemned content").to.equal(404);
    proceed();
    await inspected;
    const after = await fetch(`${peerUrl(a)}/v2/modelcache/blobs/sha256:${file.sha256}`, { method: "HEAD", headers: { "x-modelcache-peer": "1" } });
    expect(after.status, "once quarantined").to.equal(404);
  });

  it("finds peers by dns:NAME:PORT (localhost)", async () => {
    const hub = await hubServing();
    const a = await started(hub);
    await pullMinilm(a);
    const port = Number(a.server.hubAddress!.split(":").at(-1));
    const b = await started(hub, { peers: `dns:localhost:${port}` });
    const completed = await pullMinilm(b);
    expect(completed.peerBytes).to.equal(lfsBytes(hub));
  });

  it("never sends a peer request to its own hub endpoint, by address or, through an address it cannot tell, after the first answer", async () => {
    const hub = await hubServing();
    const port = await freePort();
    const own = `http://127.0.0.1:${port},http://localhost:${port},dns:localhost:${port}`;
    const s = await started(hub, { hubListen: `127.0.0.1:${port}`, peers: own });
    await pullMinilm(s);
    expect(await metric(s, 'modelcache_hub_requests_total{route="blob",code="404"}')).to.equal(0);
    expect(await metric(s, 'modelcache_hub_requests_total{route="blob",code="200"}')).to.equal(0);

    // a TCP relay to a second server's own endpoint: an address that server cannot know is its own
    const relayed: Socket[] = [];
    let target = 0;
    const relay = createTcpServer((socket) => {
      relayed.push(socket);
      const upstream = connect(target, "127.0.0.1");
      relayed.push(upstream);
      socket.pipe(upstream).pipe(socket);
      socket.on("error", () => upstream.destroy());
      upstream.on("error", () => socket.destroy());
    });
    await new Promise<void>((resolve) => relay.listen(0, "127.0.0.1", resolve));
    cleanups.push(async () => {
      relayed.forEach((s) => s.destroy());
      await new Promise((resolve) => relay.close(resolve));
    });
    const r = await started(hub, { peers: `http://127.0.0.1:${(relay.address() as AddressInfo).port}`, fileConcurrency: 1 });
    target = Number(r.server.hubAddress!.split(":").at(-1));
    await pullMinilm(r);
    expect(await metric(r, 'modelcache_hub_requests_total{route="blob",code="404"}')).to.equal(1);
  });

  it("takes a peer on another address of this machine at the same port for a peer, when its own endpoint is bound to one address", async () => {
    const hub = await hubServing();
    // two servers on one machine, one port, two loopback addresses
    const other = await started(hub, { hubListen: "127.0.0.2:0" });
    await pullMinilm(other);
    const port = Number(other.server.hubAddress!.split(":").at(-1));
    const s = await started(hub, { hubListen: `127.0.0.1:${port}`, peers: peerUrl(other) });
    expect((await pullMinilm(s)).peerBytes).to.equal(lfsBytes(hub));
  });

  it("knows its own endpoint by address: any address of this machine for a wildcard bind, only the bound one otherwise", () => {
    const own = (hubAddress: string, peer: string) => isOwnEndpoint(peer, ownEndpointOf(hubAddress));
    for (const peer of ["http://127.0.0.1:50052", "http://127.0.0.2:50052", "http://localhost:50052", "http://0.0.0.0:50052"]) {
      expect(own("0.0.0.0:50052", peer), peer).to.equal(true);
      expect(own("[::]:50052", peer), peer).to.equal(true);
    }
    expect(own("[::]:50052", "http://[::1]:50052")).to.equal(true);
    expect(own("0.0.0.0:50052", "http://[::1]:50052"), "an IPv4 bind is not reached over IPv6").to.equal(false);
    expect(own("127.0.0.1:50052", "http://127.0.0.1:50052")).to.equal(true);
    expect(own("127.0.0.1:50052", "http://localhost:50052")).to.equal(true);
    expect(own("localhost:50052", "http://127.0.0.1:50052")).to.equal(true);
    expect(own("[::1]:50052", "http://[::1]:50052")).to.equal(true);
    expect(own("127.0.0.1:50052", "http://127.0.0.2:50052"), "another loopback address").to.equal(false);
    expect(own("127.0.0.1:50052", "http://[::1]:50052")).to.equal(false);
    expect(own("127.0.0.1:50052", "http://127.0.0.1:50053")).to.equal(false);
    expect(own("unix:/run/modelcache.sock", "http://127.0.0.1:50052")).to.equal(false);
  });

  it("orders peers by digest and address only: not by list order, at most the number asked, digests spread over peers", () => {
    const peers = ["http://10.0.0.1:50052", "http://10.0.0.2:50052", "http://10.0.0.3:50052", "http://10.0.0.4:50052", "http://10.0.0.5:50052"];
    const first = new Map<string, number>();
    for (let i = 0; i < 200; i++) {
      const sha = createHash("sha256").update(String(i)).digest("hex");
      const order = rendezvousOrder(sha, peers, 3);
      expect(order).to.have.length(3);
      expect(rendezvousOrder(sha, [...peers].reverse(), 3)).to.deep.equal(order);
      expect(rendezvousOrder(sha, [peers[2]!, peers[0]!, peers[4]!, peers[1]!, peers[3]!], 3)).to.deep.equal(order);
      // a peer leaving moves only what it ranked: the others keep their order
      expect(rendezvousOrder(sha, peers.filter((p) => p !== order[0]), 2)).to.deep.equal(order.slice(1));
      first.set(order[0]!, (first.get(order[0]!) ?? 0) + 1);
    }
    expect([...first.keys()].sort()).to.deep.equal(peers);
  });

  it("resolves dns: names again on its interval, takes every record, and keeps the last addresses when a resolution fails", async () => {
    // the first resolution answers at once; each later one waits for the test's answer
    let first = true;
    const pending: ((answer: { address: string }[] | Error) => void)[] = [];
    let arrived: (() => void) | undefined;
    const lookup = (_name: string) => {
      if (first) {
        first = false;
        return Promise.resolve([{ address: "10.0.0.1" }]);
      }
      return new Promise<{ address: string }[]>((resolve, reject) => {
        pending.push((answer) => (answer instanceof Error ? reject(answer) : resolve(answer)));
        arrived?.();
      });
    };
    const answerNext = async (answer: { address: string }[] | Error) => {
      while (pending.length === 0) await new Promise<void>((resolve) => (arrived = resolve));
      pending.shift()!(answer);
      // the list takes the answer before anything queued after it runs
      await new Promise((resolve) => setImmediate(resolve));
    };
    const list = new PeerList(parsePeerList("dns:peers.example:50052,http://10.0.0.9:50052"), pino({ level: "silent" }), 5, lookup);
    try {
      expect(await list.current()).to.deep.equal(["http://10.0.0.1:50052", "http://10.0.0.9:50052"]);
      await answerNext([{ address: "10.0.0.2" }, { address: "fd00::2" }]);
      expect(await list.current()).to.deep.equal(["http://10.0.0.2:50052", "http://[fd00::2]:50052", "http://10.0.0.9:50052"]);
      await answerNext(new Error("SERVFAIL"));
      expect(await list.current()).to.deep.equal(["http://10.0.0.2:50052", "http://[fd00::2]:50052", "http://10.0.0.9:50052"]);
    } finally {
      list.close();
    }
    expect(DNS_REFRESH_MS).to.equal(30_000);
  });

  it("sends what peers fetch through one shared upload cap, and counts it out", async () => {
    const hub = await hubServing();
    const a = await started(hub, { peerMaxBytesPerSecond: 1024 * 1024 * 1024 });
    await pullMinilm(a);
    const b1 = await started(hub, { peers: peerUrl(a) });
    const b2 = await started(hub, { peers: peerUrl(a) });
    const [one, two] = await Promise.all([pullMinilm(b1), pullMinilm(b2)]);
    expect(one.peerBytes + two.peerBytes).to.equal(2 * lfsBytes(hub));
    const uploads = a.server.runtime.peers!.uploads;
    expect(uploads.sentBytes).to.equal(2 * lfsBytes(hub));
    expect(uploads.pacedBytes, "bytes that went through the cap").to.equal(uploads.sentBytes);
    expect(await metric(a, 'modelcache_peer_bytes_total{direction="out"}')).to.equal(2 * lfsBytes(hub));
  });

  it("paces what a capped server sends a peer in small pieces: a transfer under a low cap keeps making progress and is not taken for a stalled one", async () => {
    const hub = await hubServing();
    // 2 MiB/s: a 1 MiB piece would leave the peer half a second without a byte
    const a = await started(hub, { peerMaxBytesPerSecond: 2 * 1024 * 1024 });
    await pullMinilm(a);
    const sentByHub = lfsFiles(hub).map((f) => hub.sent(f.path));
    const b = await started(hub, { peers: peerUrl(a), peerStallMs: 400 });
    expect((await pullMinilm(b)).peerBytes).to.equal(lfsBytes(hub));
    expect(await metric(b, 'modelcache_peer_errors_total{reason="timeout"}')).to.equal(0);
    expect(lfsFiles(hub).map((f) => hub.sent(f.path)), "bytes the hub sent per LFS file").to.deep.equal(sentByHub);
  });

  it("does not take a peer for stalled while the node's own --max-bytes-per-second holds its transfer back", async function () {
    this.timeout(30_000);
    const hub = await FakeHub.serve(REPO, FIXTURE_DIR, { "onnx/model.onnx": patternedBytes(256 * 1024) });
    cleanups.push(() => hub.close());
    const a = await started(hub);
    await pullMinilm(a);
    const sentByHub = lfsFiles(hub).map((f) => hub.sent(f.path));
    // 128 KiB/s: each 64 KiB the node takes waits about half a second for its own cap, longer than the stall limit
    const b = await started(hub, { peers: peerUrl(a), peerStallMs: 300, maxBytesPerSecond: 128 * 1024 });
    expect((await pullMinilm(b)).peerBytes).to.equal(lfsBytes(hub));
    expect(await metric(b, 'modelcache_peer_errors_total{reason="timeout"}')).to.equal(0);
    expect(lfsFiles(hub).map((f) => hub.sent(f.path)), "bytes the hub sent per LFS file").to.deep.equal(sentByHub);
  });

  it("takes a peer that goes away while its transfer waits for the upload cap as a closed connection, not a failed request", async () => {
    const hub = await hubServing();
    const logs = captureLogs();
    // 64 KiB/s: the second piece of the large file waits for the cap
    const a = await started(hub, { peerMaxBytesPerSecond: 64 * 1024, logger: logs.logger });
    await pullMinilm(a);
    const large = lfsFiles(hub).find((f) => f.path === "onnx/model.onnx")!;
    const controller = new AbortController();
    const res = await fetch(`${peerUrl(a)}/v2/modelcache/blobs/sha256:${large.sha256}`, { headers: { "x-modelcache-peer": "1" }, signal: controller.signal });
    const reader = res.body!.getReader();
    await reader.read();
    controller.abort();
    await reader.read().catch(() => undefined);
    const line = await logs.seen((l) => l.msg === "hub" && l.route === "blob");
    expect(logs.lines.filter((l) => l.msg === "hub request failed"), "error lines").to.deep.equal([]);
    expect(line.error).to.include("closed");
  });

  it("sends the --peer-token-file token: a peer with tokens serves it, and refuses a node without (which installs from the hub)", async () => {
    const hub = await hubServing();
    const tokens = AccessTokens.parse(JSON.stringify({ tokens: [{ name: "ops", sha256: digest(ADMIN), role: "admin" }, { name: "fleet", sha256: digest(CONSUMER), role: "consumer" }] }));
    const admin = new Metadata();
    admin.set("authorization", `Bearer ${ADMIN}`);
    const a = await started(hub, { authTokens: tokens }, admin);
    await pullMinilm(a, admin);
    const dir = await mkdtemp(join(tmpdir(), "modelcache-peer-token-"));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    await writeFile(join(dir, "token"), `  ${CONSUMER}\n`);
    const withToken = await started(hub, { peers: peerUrl(a), peerTokenFile: join(dir, "token") });
    expect((await pullMinilm(withToken)).peerBytes).to.equal(lfsBytes(hub));
    // one file at a time: the refusal of the first file leaves the peer out for the second
    const without = await started(hub, { peers: peerUrl(a), fileConcurrency: 1 });
    const before = lfsFiles(hub).map((f) => hub.sent(f.path));
    expect((await pullMinilm(without)).peerBytes).to.equal(0);
    expect(await metric(without, 'modelcache_peer_errors_total{reason="status"}')).to.equal(1);
    expect(lfsFiles(hub).map((f, i) => hub.sent(f.path) - before[i]!)).to.deep.equal(lfsFiles(hub).map((f) => f.bytes.length));
  });

  it("fetches an OCI model's layers from a peer: the registry sends no layer a second time", async function () {
    if (!registryAvailable) this.skip();
    const registry = await OciRegistry.start();
    cleanups.push(() => registry.close());
    const files = { "config.json": '{"hidden_size": 384}', "onnx/model.onnx": big, "tokenizer.json": "{}" };
    await registry.pushModelPack("models/minilm", "v1", files);
    const spec = modelSpec({ source: `oci://${registry.address}/models/minilm`, revision: "v1" });
    const oci = { offline: false, ociPlainHttp: [registry.address], hubListen: "127.0.0.1:0", metricsListen: "127.0.0.1:0", peerHeadBudgetMs: HEAD_BUDGET_MS };
    const a = await startTestServer(oci);
    cleanups.push(() => a.close());
    await call(a.client, "registerModel", { model: spec });
    await pullMinilm(a);
    const layers = Object.values(files).map((data) => `sha256:${sha256hex(data)}`);
    const gets = layers.map((layer) => registry.blobGets(layer));
    const b = await startTestServer({ ...oci, peers: peerUrl(a) });
    cleanups.push(() => b.close());
    await call(b.client, "registerModel", { model: spec });
    const completed = await pullMinilm(b);
    expect(layers.map((layer) => registry.blobGets(layer))).to.deep.equal(gets);
    expect(completed.peerBytes).to.equal(Object.values(files).reduce((sum, data) => sum + Buffer.byteLength(data), 0));
  });

  it("fetches S3 objects with a SHA-256 checksum from a peer, and those without from the store", async () => {
    const s3 = await FakeS3.start(["models"]);
    cleanups.push(() => s3.close());
    const objects = { "minilm/config.json": '{"hidden_size": 384}', "minilm/onnx/model.onnx": big, "minilm/tokenizer.json": "{}" };
    await s3.put("models", objects);
    s3.faults.checksum.set("minilm/onnx/model.onnx", sha256hex(big));
    s3.faults.checksum.set("minilm/config.json", sha256hex(objects["minilm/config.json"]));
    const spec = modelSpec({ source: "s3://models/minilm", revision: "", credentialAlias: "store" });
    const options = { offline: false, s3Endpoint: s3.url, parallelRangeMinBytes: 1024 * 1024, parallelRangeBelowBytesPerSecond: Infinity, hubListen: "127.0.0.1:0", metricsListen: "127.0.0.1:0", peerHeadBudgetMs: HEAD_BUDGET_MS };
    const a = await startTestServer(options);
    cleanups.push(() => a.close());
    const b = await startTestServer({ ...options, peers: peerUrl(a) });
    cleanups.push(() => b.close());
    for (const t of [a, b]) {
      await call(t.client, "putSecret", { alias: "store", value: JSON.stringify(S3_CREDENTIALS) });
      await call(t.client, "registerModel", { model: spec });
    }
    await pullMinilm(a);
    const keys = Object.keys(objects);
    const gets = keys.map((key) => s3.gets(key).length);
    const completed = await pullMinilm(b);
    const after = keys.map((key, i) => s3.gets(key).length - gets[i]!);
    expect(after, keys.join(", ")).to.deep.equal([0, 0, 1]);
    expect(completed.peerBytes).to.equal(big.length + Buffer.byteLength(objects["minilm/config.json"]));
  });

  it("after SIGKILL in the middle of a peer transfer, a restarted server has cleared the peer's partial and installs whole", async () => {
    const hub = await hubServing();
    const big = lfsFiles(hub).find((f) => f.path === "onnx/model.onnx")!;
    // sends half of the large file, then nothing until the test ends
    const open: ServerResponse[] = [];
    const half = await httpPeer((req, res) => {
      if (!req.url?.endsWith(big.sha256)) return void res.writeHead(404).end();
      res.writeHead(200, { "content-length": String(big.bytes.length) });
      if (req.method === "HEAD") return void res.end();
      res.write(big.bytes.subarray(0, big.bytes.length / 2));
      open.push(res);
    });
    cleanups.push(() => half.close());
    cleanups.push(async () => open.forEach((res) => res.destroy()));
    const dataDir = await mkdtemp(join(tmpdir(), "modelcache-peer-crash-"));
    cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
    const blobs = join(dataDir, "ai_models_cache", ".blobs");
    const peerPartials = async () => (await readdir(blobs, { recursive: true })).filter((path) => basename(path).startsWith("peer-"));
    const first = await spawnServer({ dataDir, args: ["--hub-url", hub.url, "--peers", half.url] });
    cleanups.push(() => first.kill());
    await call(first.client, "registerModel", { model: modelSpec({ source: REPO }) });
    void pull(first.client, { name: "minilm" }).catch(() => undefined);
    // the partial holds bytes from the peer: the transfer is under way
    for (;;) {
      const [partial] = await peerPartials();
      if (partial !== undefined && (await stat(join(blobs, partial)).catch(() => undefined))?.size) break;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    await first.kill();
    const second = await spawnServer({ dataDir, args: ["--hub-url", hub.url] });
    cleanups.push(() => second.kill());
    expect(await peerPartials()).to.deep.equal([]);
    expect((await call(second.client, "getModel", { name: "minilm" })).model!.status).to.not.equal(ModelStatus.MODEL_STATUS_INSTALLED);
    const events = await pull(second.client, { name: "minilm" });
    expect(events.error).to.equal(undefined);
    expect(await readFile(join(dataDir, "ai_models_cache", "minilm", big.path))).to.deep.equal(big.bytes);
  });

  it("a pull that fails after a peer's file was handed to it leaves nothing of that file in the ingest area", async () => {
    const hub = await hubServing();
    const large = lfsFiles(hub).find((f) => f.path === "onnx/model.onnx")!;
    // a peer holding the large file, whose GETs wait until the test lets them go
    const { peer, gotGet, letGo } = await gatedPeer(large, (_req, res) => res.writeHead(200, { "content-length": String(large.bytes.length) }).end(large.bytes));
    cleanups.push(async () => letGo(), () => peer.close());
    // config.json comes from the hub, wrong, once the large file from the peer waits for the store
    let releaseConfig!: () => void;
    hub.faults.hold.set("config.json", new Promise<void>((resolve) => (releaseConfig = resolve)));
    hub.faults.wrongBytes.add("config.json");
    cleanups.push(async () => releaseConfig());
    const b = await started(hub, { peers: peer.url });
    const { store } = b.server.runtime;
    const outcome = pull(b.client, { name: "minilm" });
    await gotGet;
    // the test takes the large file's content lock: the peer's verified file is handed over and waits to be committed
    const unlock = await store.locks.acquire(large.sha256, undefined);
    cleanups.push(async () => unlock());
    letGo();
    while ((await metric(b, 'modelcache_peer_bytes_total{direction="in"}')) < large.bytes.length) await new Promise((resolve) => setTimeout(resolve, 10));
    const handed = (await readdir(store.ingestArea)).filter((name) => name.startsWith("peer-"));
    expect(handed, "the peer's file, handed over").to.have.length(1);
    releaseConfig();
    expect((await outcome).error?.message).to.include("config.json");
    unlock();
    expect((await readdir(store.ingestArea)).filter((name) => name.startsWith("peer-")), "peer files left in the ingest area").to.deep.equal([]);
    expect([...store.ingesting], "ingest files PruneCache must leave alone").to.deep.equal([]);
  });

  it("PruneCache during a peer transfer in ranges leaves the transfer's files alone, and the pull installs from the peer", async () => {
    const hub = await hubServing();
    const large = lfsFiles(hub).find((f) => f.path === "onnx/model.onnx")!;
    // a peer serving the large file in ranges, whose GETs wait until the test lets them go
    const { peer, gotGet, letGo } = await gatedPeer(large, (req, res) => {
      const [, from, to] = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? "")!;
      const start = Number(from);
      const end = Number(to) + 1;
      res.writeHead(206, { "content-length": String(end - start), "content-range": `bytes ${start}-${end - 1}/${large.bytes.length}` }).end(large.bytes.subarray(start, end));
    });
    cleanups.push(async () => letGo(), () => peer.close());
    const b = await started(hub, { peers: peer.url, parallelRangeMinBytes: 1024 * 1024, parallelRangeBelowBytesPerSecond: Infinity });
    const { store } = b.server.runtime;
    const outcome = pull(b.client, { name: "minilm" });
    await gotGet;
    const inArea = async () => (await readdir(store.ingestArea)).filter((name) => name.startsWith("peer-")).sort();
    const before = await inArea();
    expect(before.some((name) => name.endsWith(".segments.json")), before.join(", ")).to.equal(true);
    await call(b.client, "pruneCache", { dryRun: false });
    expect(await inArea(), "the transfer's files after PruneCache").to.deep.equal(before);
    letGo();
    const ended = await outcome;
    expect(ended.error).to.equal(undefined);
    expect(ended.events.at(-1)!.completed!.peerBytes).to.equal(large.bytes.length);
  });

  it("takes --peers from MODELCACHE_PEERS, and lists the three flags in serve --help and the configuration reference", async () => {
    const dir = await mkdtemp(join(tmpdir(), "modelcache-peer-cli-"));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const run = await runCli("", ["serve", "--listen", "127.0.0.1:0", "--data-dir", dir, "--log-format", "json"], { env: { MODELCACHE_PEERS: "http://10.0.0.7:50052,dns:no-port" } });
    expect(run.code).to.equal(2);
    expect(run.stdout + run.stderr).to.include("--peers entry 'dns:no-port' is not dns:NAME:PORT");
    const help = (await runCli("", ["serve", "--help"])).stdout;
    const reference = await readFile(join(import.meta.dirname, "..", "docs", "configuration.md"), "utf8");
    for (const flag of ["--peers", "--peer-token-file", "--peer-max-bytes-per-second"]) {
      expect(help).to.match(new RegExp(`${flag} <`));
      expect(reference).to.match(new RegExp(`\\| \`${flag} <[a-z]+>\` \\| \`MODELCACHE_${flag.slice(2).replace(/-/g, "_").toUpperCase()}\` \\|`));
    }
  });

  it("refuses a malformed --peers entry or an empty --peer-token-file, naming the flag", async () => {
    const dir = await mkdtemp(join(tmpdir(), "modelcache-peer-settings-"));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    await writeFile(join(dir, "empty"), "\n");
    for (const [options, words] of [
      [{ peers: "dns:nameonly" }, "--peers entry 'dns:nameonly' is not dns:NAME:PORT"],
      [{ peers: "ftp://10.0.0.7:50052" }, "--peers entry 'ftp://10.0.0.7:50052'"],
      [{ peers: "http://user:pw@10.0.0.7:50052" }, "without credentials"],
      [{ peerTokenFile: join(dir, "empty") }, "--peer-token-file"],
      [{ peerTokenFile: join(dir, "missing") }, "--peer-token-file"],
      [{ peerMaxBytesPerSecond: 10 }, "--peer-max-bytes-per-second"],
    ] as const) {
      const error = await resolveSettings({ listen: "127.0.0.1:0", dataDir: join(dir, "data"), ...options }).then(
        () => undefined,
        (err: ModelCacheError) => err,
      );
      expect(error?.kind, JSON.stringify(options)).to.equal("invalid_argument");
      expect(error?.message, JSON.stringify(options)).to.include(words);
    }
    // a password given by mistake in an entry is not repeated in the message (which goes to the log)
    const leaked = await resolveSettings({ listen: "127.0.0.1:0", dataDir: join(dir, "data"), peers: "http://fleet:s3cret-pw@10.0.0.7:50052" }).then(
      () => undefined,
      (err: ModelCacheError) => err,
    );
    expect(leaked?.kind).to.equal("invalid_argument");
    expect(leaked?.message).to.include("without credentials").and.not.include("s3cret-pw");
    const query = await resolveSettings({ listen: "127.0.0.1:0", dataDir: join(dir, "data"), peers: "http://10.0.0.7:50052/?token=s3cret-pw" }).then(
      () => undefined,
      (err: ModelCacheError) => err,
    );
    expect(query?.message).to.include("without credentials").and.not.include("s3cret-pw");
  });
});
