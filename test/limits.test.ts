// Limits: message size, streams per connection, and what one pull may bring
// in, each refused with RESOURCE_EXHAUSTED naming the limit; errors quote at
// most 80 characters of a bad value.
import { connect as http2Connect, constants as http2Constants } from "node:http2";
import { setTimeout as sleep } from "node:timers/promises";
import { status } from "@grpc/grpc-js";
import { expect } from "chai";
import { wellFormed } from "../src/errors.js";
import { CacheStatus, PullRequest } from "../generated/modelcache/v1/model_cache.js";
import { FakeHub } from "./support/fake-hub.js";
import { makeSourceDir } from "./support/source-dir.js";
import { FIXTURE_DIR, type TestServer, call, callError, modelSpec, pull, pullOk, startTestServer } from "./support/test-server.js";

describe("limits", () => {
  let t: TestServer | undefined;
  afterEach(async () => {
    await t?.close();
    t = undefined;
  });

  async function serve(options: Parameters<typeof startTestServer>[0]): Promise<TestServer> {
    t = await startTestServer(options);
    await call(t.client, "registerModel", { model: modelSpec() });
    return t;
  }

  const pullLimits: [string, Parameters<typeof startTestServer>[0], RegExp][] = [
    ["files per pull", { pullLimits: { maxFiles: 2 } }, /lists 4 files, more than --max-files-per-pull \(2\)/],
    ["file size", { pullLimits: { maxFileBytes: 1000 } }, /file '.*' is \d+ bytes, more than --max-file-bytes \(1000\)/],
    ["total bytes per pull", { pullLimits: { maxTotalBytes: 3000, maxFileBytes: 10_000 } }, /come to \d+ bytes, more than --max-pull-bytes \(3000\)/],
  ];
  for (const [what, options, message] of pullLimits) {
    it(`refuses a pull over the ${what} limit with RESOURCE_EXHAUSTED naming it, installing nothing`, async () => {
      const server = await serve(options);
      const outcome = await pull(server.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
      expect(outcome.error?.code).to.equal(status.RESOURCE_EXHAUSTED);
      expect(outcome.error?.details).to.match(message);
      expect(outcome.events).to.deep.equal([]);
      expect((await call(server.client, "inspectCache", { name: "minilm", deep: false })).status).to.equal(CacheStatus.CACHE_STATUS_MISSING);
    });
  }

  it("counts only the files the model's filters keep", async () => {
    const server = await serve({ pullLimits: { maxFiles: 2 } });
    await call(server.client, "updateModel", { name: "minilm", model: modelSpec({ include: ["config.json"] }) });
    await pullOk(server.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
  });

  it("refuses a request message over --max-message-bytes with RESOURCE_EXHAUSTED", async () => {
    const server = await serve({ maxMessageBytes: 1024 });
    const err = await callError(server.client, "putSecret", { alias: "hf", value: "x".repeat(2048) });
    expect(err.code).to.equal(status.RESOURCE_EXHAUSTED);
    await call(server.client, "putSecret", { alias: "hf", value: "small" });
  });

  it("queues a call past --max-concurrent-streams on one connection and serves it once one ends", async () => {
    const made = await makeSourceDir({ "model.safetensors": Buffer.alloc(4 * 1024 * 1024, 1) });
    const hub = await FakeHub.serve("acme/slow", made.dir);
    hub.faults.bytesPerSecond = 256 * 1024;
    try {
      const server = await serve({ maxConcurrentStreams: 2, hubUrl: hub.url });
      await call(server.client, "updateModel", { name: "minilm", model: modelSpec({ source: "acme/slow" }) });
      const streams = [0, 1].map(() => server.client.pull(PullRequest.fromPartial({ name: "minilm" })));
      const ended = streams.map((s) => new Promise((resolve) => s.on("error", resolve).on("end", resolve).on("data", () => undefined)));
      // both streams are open once each has sent its first event
      await Promise.all(streams.map((s) => new Promise((resolve) => s.once("data", resolve))));
      let answered = false;
      const third = call(server.client, "getModel", { name: "minilm" }).finally(() => {
        answered = true;
      });
      await sleep(200);
      expect(answered, "the third call waits while two are open").to.equal(false);
      for (const s of streams) s.cancel();
      await Promise.all(ended);
      expect((await third).model!.name).to.equal("minilm");
    } finally {
      await t?.close();
      t = undefined;
      await hub.close();
      await made.cleanup();
    }
  });

  it("refuses a stream past --max-concurrent-streams from a client that ignores the setting, at the HTTP/2 level", async () => {
    const server = await serve({ maxConcurrentStreams: 2 });
    const session = http2Connect(`http://${server.server.address}`);
    try {
      // sent at once, before the server's SETTINGS arrive: nothing on the client holds the third back
      const streams = [0, 1, 2].map(() =>
        session.request({ ":method": "POST", ":path": "/modelcache.v1.ModelCacheService/GetModel", "content-type": "application/grpc", te: "trailers" }, { endStream: false }),
      );
      const refused = await new Promise<number>((resolve) => streams[2]!.once("close", () => resolve(streams[2]!.rstCode ?? 0)).on("error", () => undefined));
      expect(refused).to.equal(http2Constants.NGHTTP2_REFUSED_STREAM);
      for (const stream of streams.slice(0, 2)) stream.close(http2Constants.NGHTTP2_CANCEL);
    } finally {
      session.destroy();
    }
  });

  it("serves 500 concurrent unary calls through one generated client", async () => {
    const server = await serve({});
    await pullOk(server.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
    const results = await Promise.allSettled(Array.from({ length: 500 }, () => call(server.client, "inspectCache", { name: "minilm", deep: false })));
    const failed = results.filter((r) => r.status === "rejected").map((r) => (r as PromiseRejectedResult).reason.details as string);
    expect(failed).to.deep.equal([]);
    for (const r of results) expect((r as PromiseFulfilledResult<{ status: CacheStatus }>).value.status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
  });

  it("refuses a --max-concurrent-streams that HTTP/2 cannot carry", async () => {
    const error = await startTestServer({ maxConcurrentStreams: 2 ** 32 }).catch((err: Error) => err);
    expect((error as Error).message).to.include("--max-concurrent-streams").and.include(String(2 ** 32 - 1));
  });

  it("counts a call only while it is open: many calls in turn on one connection all pass a limit of 2", async () => {
    const server = await serve({ maxConcurrentStreams: 2 });
    for (let i = 0; i < 200; i++) await call(server.client, "getModel", { name: "minilm" });
    await callError(server.client, "getModel", { name: "nope" });
    await pullOk(server.client, { name: "minilm", fixtureDir: FIXTURE_DIR });
    for (let i = 0; i < 50; i++) await call(server.client, "inspectCache", { name: "minilm", deep: false });
  });

  it("advertises --max-concurrent-streams to HTTP/2, so that clients queue the calls past it", async () => {
    const server = await serve({ maxConcurrentStreams: 7 });
    const session = http2Connect(`http://${server.server.address}`);
    try {
      const settings = await new Promise<{ maxConcurrentStreams?: number }>((resolve, reject) => {
        session.once("remoteSettings", resolve);
        session.once("error", reject);
      });
      expect(settings.maxConcurrentStreams).to.equal(7);
    } finally {
      session.destroy();
    }
  });

  it("quotes at most 80 characters of a 100 KB name in its error", async () => {
    const server = await serve({});
    const name = `${"a".repeat(80)}b${"c".repeat(100_000)}!`;
    const err = await callError(server.client, "getModel", { name });
    expect(err.code).to.equal(status.INVALID_ARGUMENT);
    expect(err.details).to.include("a".repeat(80)).and.not.include("ab");
    expect(err.details.length).to.be.below(400);
  });

  it("answers a value cut inside an emoji, or holding a lone surrogate, with a well-formed message instead of hanging", async () => {
    const server = await serve({});
    for (const name of ["😀".repeat(100), "a\uD83D", "\uDE00b"]) {
      const err = await callError(server.client, "getModel", { name });
      expect(err.code, JSON.stringify(name)).to.equal(status.INVALID_ARGUMENT);
      expect(err.details, "no lone surrogate").to.equal(wellFormed(err.details));
    }
    const outcome = await pull(server.client, { name: "minilm", fixtureDir: `/x/${"😀".repeat(50)}` }, { deadline: new Date(Date.now() + 10_000) });
    expect(outcome.error?.code).to.not.equal(status.DEADLINE_EXCEEDED);
    expect(outcome.error?.details).to.include("fixture_dir");
  });
});
