import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer as createHttpsServer } from "node:https";
import { request } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { makeCertificates } from "./support/certificates.js";
import { spawnServer } from "./support/child-server.js";
import { FakeHub } from "./support/fake-hub.js";
import { FakeS3, S3_CREDENTIALS } from "./support/fake-s3.js";
import { ForwardProxy } from "./support/forward-proxy.js";
import { captureLogs } from "./support/log-capture.js";
import { FIXTURE_DIR, type TestServer, call, modelSpec, pullOk, startTestServer } from "./support/test-server.js";
import type { ServerOptions } from "../src/server/start-server.js";

const REPO = "acme/tiny-minilm";
const PROXY_VARIABLES = ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"];

describe("pulling through a proxy", () => {
  let hub: FakeHub;
  let s3: FakeS3;
  let proxy: ForwardProxy;
  let t: TestServer | undefined;
  let saved: Record<string, string | undefined>;
  beforeEach(async () => {
    saved = Object.fromEntries(PROXY_VARIABLES.map((name) => [name, process.env[name]]));
    for (const name of PROXY_VARIABLES) delete process.env[name];
    hub = await FakeHub.serve(REPO, FIXTURE_DIR, {});
    s3 = await FakeS3.start(["models"]);
    await s3.put("models", { "minilm/config.json": "{}" });
    proxy = await ForwardProxy.start();
  });
  afterEach(async () => {
    await t?.close();
    t = undefined;
    for (const name of PROXY_VARIABLES) {
      if (saved[name] === undefined) delete process.env[name];
      else process.env[name] = saved[name];
    }
    await proxy.close();
    await s3.close();
    await hub.close();
  });
  const hostOf = (url: string) => new URL(url).host;

  async function pullBoth(options: Partial<ServerOptions>): Promise<void> {
    t = await startTestServer({ hubUrl: hub.url, s3Endpoint: s3.url, progressIntervalMs: 0, ...options });
    await call(t.client, "putSecret", { alias: "store", value: JSON.stringify(S3_CREDENTIALS) });
    await call(t.client, "registerModel", { model: modelSpec({ name: "hubmodel", source: REPO, revision: "main" }) });
    await call(t.client, "registerModel", { model: modelSpec({ name: "s3model", source: "s3://models/minilm", revision: "", credentialAlias: "store" }) });
    await pullOk(t.client, { name: "hubmodel" });
    await pullOk(t.client, { name: "s3model" });
  }

  it("sends hub and S3 requests through --proxy, in absolute form for plain http", async () => {
    await pullBoth({ proxy: proxy.url });
    expect(proxy.hosts()).to.include.members([hostOf(hub.url), hostOf(s3.url)]);
    expect(proxy.requests.every((r) => r.kind === "absolute")).to.equal(true);
  });

  it("honours lower-case http_proxy and skips the hosts no_proxy names", async () => {
    process.env.http_proxy = proxy.url;
    process.env.no_proxy = hostOf(hub.url);
    await pullBoth({});
    expect(proxy.hosts()).to.include(hostOf(s3.url));
    expect(proxy.hosts()).to.not.include(hostOf(hub.url));
  });

  it("honours upper-case HTTP_PROXY and NO_PROXY", async () => {
    process.env.HTTP_PROXY = proxy.url;
    process.env.NO_PROXY = hostOf(s3.url);
    await pullBoth({});
    expect(proxy.hosts()).to.include(hostOf(hub.url));
    expect(proxy.hosts()).to.not.include(hostOf(s3.url));
  });

  it("authenticates to the proxy with the URL's credentials and never logs them", async () => {
    const logs = captureLogs("trace");
    const url = new URL(proxy.url);
    url.username = "fleet";
    url.password = "pr0xy-s3cret";
    await pullBoth({ proxy: url.href, logger: logs.logger });
    expect(proxy.requests[0]!.proxyAuthorization).to.equal(`Basic ${Buffer.from("fleet:pr0xy-s3cret").toString("base64")}`);
    expect(logs.raw()).to.include(hostOf(proxy.url)).and.not.include("pr0xy-s3cret");
  });

  it("refuses a --proxy that is not an http(s) URL, without quoting it", async () => {
    const err = await startTestServer({ proxy: "socks://user:hunter2@127.0.0.1:1080" }).then(
      (server) => server.close().then(() => undefined),
      (e: Error & { kind?: string }) => e,
    );
    expect(err?.message).to.include("--proxy").and.not.include("hunter2");
  });
});

describe("an https store through HTTPS_PROXY", () => {
  it("reaches it through a CONNECT tunnel, verifying its certificate end to end", async () => {
    const certs = await makeCertificates();
    const s3 = await FakeS3.start(["models"]);
    const proxy = await ForwardProxy.start();
    // TLS in front of the S3 server, as a real endpoint would have
    const front = createHttpsServer({ cert: await readFile(certs.serverCert), key: await readFile(certs.serverKey) }, (req, res) => {
      const target = new URL(s3.url);
      const upstream = request({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers }, (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      });
      req.pipe(upstream);
    });
    await new Promise<void>((resolve) => front.listen(0, "127.0.0.1", resolve));
    const endpoint = `https://127.0.0.1:${(front.address() as AddressInfo).port}`;
    const dataDir = await mkdtemp(join(tmpdir(), "modelcache-test-"));
    const names = ["HTTPS_PROXY", "NODE_EXTRA_CA_CERTS", "no_grpc_proxy"];
    const saved = Object.fromEntries(names.map((name) => [name, process.env[name]]));
    // the server trusts the test CA; the test's own gRPC client does not use the proxy
    Object.assign(process.env, { HTTPS_PROXY: proxy.url, NODE_EXTRA_CA_CERTS: certs.ca, no_grpc_proxy: "127.0.0.1" });
    const server = await spawnServer({ dataDir, args: ["--s3-endpoint", endpoint] }).finally(() => {
      for (const name of names) {
        if (saved[name] === undefined) delete process.env[name];
        else process.env[name] = saved[name];
      }
    });
    try {
      await s3.put("models", { "minilm/config.json": "{}" });
      await call(server.client, "registerModel", { model: modelSpec({ source: "s3://models/minilm", revision: "" }) });
      await pullOk(server.client, { name: "minilm" });
      expect(proxy.requests.filter((r) => r.kind === "connect").map((r) => r.host)).to.include(new URL(endpoint).host);
      expect(s3.gets("minilm/config.json")).to.have.length(1);
    } finally {
      server.client.close();
      await server.kill();
      front.closeAllConnections();
      await new Promise<void>((resolve) => front.close(() => resolve()));
      await proxy.close();
      await s3.close();
      await certs.cleanup();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
