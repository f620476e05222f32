// What the server logs: one line per RPC, a line when a pull starts and one
// when it ends (bytes, time, rate), never a secret; readable lines on a
// terminal, JSON lines elsewhere.
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { status } from "@grpc/grpc-js";
import { expect } from "chai";
import { pino } from "pino";
import { CacheStatus, PullPolicy, PullRequest } from "../generated/modelcache/v1/model_cache.js";
import { type LogCapture, type LogLine, captureLogs } from "./support/log-capture.js";
import { FakeHub } from "./support/fake-hub.js";
import { FIXTURE_DIR, type TestServer, call, callError, modelSpec, pull, pullOk, startTestServer } from "./support/test-server.js";

const BIN = join(import.meta.dirname, "..", "bin", "modelcache.js");
const REPO = "acme/private-minilm";

describe("server logs", () => {
  let hub: FakeHub;
  let t: TestServer;
  let logs: LogCapture;
  let lines: LogLine[];

  beforeEach(async () => {
    logs = captureLogs("info");
    lines = logs.lines;
    hub = await FakeHub.serve(REPO, FIXTURE_DIR);
    hub.faults.token = "hf_very_secret_token";
    t = await startTestServer({ hubUrl: hub.url, logger: logs.logger });
    await call(t.client, "registerModel", { model: modelSpec({ source: REPO, credentialAlias: "hf" }) });
  });
  afterEach(async () => {
    await t.close();
    await hub.close();
  });

  it("logs every RPC with method, model, code and duration", async () => {
    await call(t.client, "getModel", { name: "minilm" });
    await call(t.client, "getModel", { name: "nope" }).catch(() => undefined);
    const rpcs = lines.filter((l) => l.msg === "rpc");
    expect(rpcs.find((l) => l.method === "GetModel" && l.model === "minilm")).to.include({ code: "OK" });
    const missing = rpcs.find((l) => l.method === "GetModel" && l.model === "nope");
    expect(missing).to.include({ code: "NOT_FOUND" });
    expect(missing!.duration_ms).to.be.a("number");
  });

  it("logs a pull's start and finish with its bytes and rate, and never the secret", async () => {
    await call(t.client, "putSecret", { alias: "hf", value: "hf_very_secret_token" });
    const events = await pullOk(t.client, { name: "minilm" });
    const total = Number(events[0]!.started!.totalBytes);
    const started = lines.find((l) => l.msg === "pull started");
    expect(started).to.include({ model: "minilm", source: `hub:${REPO}@${hub.commit}`, bytes: total });
    const finished = lines.find((l) => l.msg === "pull finished");
    expect(finished).to.include({ model: "minilm", result: "ok", bytes: total });
    expect(finished!.bytesPerSecond).to.be.above(0);
    expect(finished!.seconds).to.be.a("number");
    expect(logs.raw()).to.not.include("hf_very_secret_token");
  });

  it("logs a failed pull as a warning with its reason", async () => {
    await call(t.client, "putSecret", { alias: "hf", value: "hf_very_secret_token" });
    hub.faults.wrongBytes.add("tokenizer.json");
    const outcome = await pull(t.client, { name: "minilm" });
    expect(outcome.error).to.not.equal(undefined);
    const failed = lines.find((l) => l.msg === "pull failed");
    expect(failed).to.include({ model: "minilm", result: "failed", level: 40 });
    expect(failed!.error).to.match(/^data_loss: .*tokenizer\.json/);
    expect(logs.raw()).to.not.include("hf_very_secret_token");
  });

  it("logs the end of a detached pull that fails after its client has gone", async () => {
    await call(t.client, "putSecret", { alias: "hf", value: "hf_very_secret_token" });
    hub.faults.wrongBytes.add("model.safetensors");
    // slow enough that the client is gone long before the wrong bytes are found
    hub.faults.bytesPerSecond = 1024;
    const stream = t.client.pull(PullRequest.fromPartial({ name: "minilm", detach: true }));
    const gone = new Promise((resolve) => stream.on("error", resolve).on("end", resolve));
    await new Promise((resolve) => stream.once("data", resolve));
    stream.cancel();
    await gone;
    const left = await waitFor(() => lines.find((l) => l.msg === "rpc" && l.method === "Pull"));
    expect(left.code).to.equal("CANCELLED");
    // the job goes on without a client until the wrong bytes fail it
    const failed = await waitFor(() => lines.find((l) => l.msg === "pull failed"));
    expect(lines.indexOf(failed)).to.be.greaterThan(lines.indexOf(left));
    expect(failed).to.include({ model: "minilm", result: "failed", code: "DATA_LOSS", level: 40 });
    expect(failed.error).to.match(/^data_loss: .*model\.safetensors/);
  });

  it("names the caller in the audit line of a call the client cancelled", async () => {
    await call(t.client, "putSecret", { alias: "hf", value: "hf_very_secret_token" });
    hub.faults.bytesPerSecond = 64 * 1024;
    const stream = t.client.pull(PullRequest.fromPartial({ name: "minilm" }));
    const gone = new Promise((resolve) => stream.on("error", resolve).on("end", resolve));
    await new Promise((resolve) => stream.once("data", resolve));
    stream.cancel();
    await gone;
    const audited = await waitFor(() => logs.audit().find((l) => l.method === "Pull"));
    expect(audited.result).to.equal("CANCELLED");
    expect(audited.caller).to.match(/^peer 127\.0\.0\.1:\d+$/);
    // its last client gone, the job was cancelled, and says so
    const cancelled = await waitFor(() => lines.find((l) => l.msg === "pull cancelled"));
    expect(cancelled).to.include({ model: "minilm", result: "cancelled", code: "CANCELLED" });
  });
  it("audits a ResolveModel that pulled, granted a lease, asked the source or failed, and not one that only read the install", async () => {
    await call(t.client, "putSecret", { alias: "hf", value: "hf_very_secret_token" });
    const resolve = (leaseSeconds: number, name = "minilm") => ({ name, pullPolicy: PullPolicy.PULL_POLICY_IF_MISSING, leaseSeconds, credentialAlias: "" });
    const pulled = await call(t.client, "resolveModel", resolve(0));
    const read = await call(t.client, "resolveModel", resolve(0));
    const leased = await call(t.client, "resolveModel", resolve(60));
    // ALWAYS asks the hub, with the model's credential, which commit its revision names
    const asked = await call(t.client, "resolveModel", { ...resolve(0), pullPolicy: PullPolicy.PULL_POLICY_ALWAYS });
    await callError(t.client, "resolveModel", resolve(0, "nope"));
    expect([pulled.pulled, read.pulled, leased.leaseId !== "", asked.pulled, asked.revalidated]).to.deep.equal([true, false, true, false, true]);
    const audited = logs.audit().filter((l) => l.method === "ResolveModel");
    expect(audited.map((l) => [l.model, l.result])).to.deep.equal([
      ["minilm", "OK"],
      ["minilm", "OK"],
      ["minilm", "OK"],
      ["nope", "NOT_FOUND"],
    ]);
    // every call still has its rpc line
    expect(lines.filter((l) => l.msg === "rpc" && l.method === "ResolveModel")).to.have.length(5);
  });
});

/** Polls until `find` returns something (the server logs a moment after the client hears). */
async function waitFor<T>(find: () => T | undefined): Promise<T> {
  for (;;) {
    const found = find();
    if (found !== undefined) return found;
    await sleep(20);
  }
}

describe("log format", () => {
  let dataDir: string;
  beforeEach(async () => {
    dataDir = await mkdtemp(join(tmpdir(), "modelcache-log-"));
  });
  afterEach(async () => {
    await rm(dataDir, { recursive: true, force: true });
  });

  /** Runs `serve` until it says it is serving, then stops it; resolves with what it wrote. */
  function serveOnce(command: string, args: string[]): Promise<string> {
    const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
      if (out.includes("modelcache is serving")) child.kill("SIGINT");
    });
    return new Promise((resolve) => child.on("exit", () => resolve(out)));
  }

  it("is JSON lines when stdout is not a terminal", async () => {
    const out = await serveOnce(process.execPath, [BIN, "serve", "--listen", "127.0.0.1:0", "--data-dir", dataDir]);
    const lines = out.split("\n").filter(Boolean).map((line) => JSON.parse(line) as LogLine);
    expect(lines[0]).to.include({ msg: "modelcache is serving", service: "modelcache", auth: "off" });
    // a server without tokens says so at start
    expect(lines.find((l) => String(l.msg).startsWith("authentication is off"))).to.include({ level: 40 });
  });

  it("is readable lines on a terminal", async () => {
    // `script` gives the server a pseudo-terminal
    const out = await serveOnce("script", ["-qfec", `${process.execPath} ${BIN} serve --listen 127.0.0.1:0 --data-dir ${dataDir}`, "/dev/null"]);
    const text = out.replace(/\u001b\[[\d;]*m/g, "");
    expect(text).to.match(/INFO: modelcache is serving/);
    expect(text).to.match(/address: "127\.0\.0\.1:\d+"/);
    expect(() => JSON.parse(text.split("\n")[0]!)).to.throw();
  });
});

describe("a log destination that fails", () => {
  let t: TestServer | undefined;
  afterEach(async () => {
    await t?.close();
    t = undefined;
  });

  it("ends only the call whose line it failed to write, as UNKNOWN, answered at once or after a wait; the server goes on serving", async () => {
    let failing = false;
    // pino writes each line to its destination synchronously: a destination that throws throws in the caller
    const destination = {
      write(line: string) {
        if (failing && line.includes('"msg":"rpc"') && line.includes("InspectCache")) throw new Error("the log's disk is gone");
      },
    };
    t = await startTestServer({ logger: pino({ level: "info" }, destination) });
    await call(t.client, "registerModel", { model: modelSpec({ name: "installed", source: REPO }) });
    await call(t.client, "registerModel", { model: modelSpec({ name: "missing", source: REPO }) });
    await pullOk(t.client, { name: "installed", fixtureDir: FIXTURE_DIR });
    failing = true;
    // a healthy install is answered at once (from the check phase); one without is answered once the disk is looked at
    for (const name of ["installed", "missing"]) {
      const error = await callError(t.client, "inspectCache", { name, deep: false });
      expect(error.code, name).to.equal(status.UNKNOWN);
      expect(error.details, name).to.include("the server failed while answering").and.include("the log's disk is gone");
    }
    failing = false;
    expect((await call(t.client, "inspectCache", { name: "installed", deep: false })).status).to.equal(CacheStatus.CACHE_STATUS_INSTALLED);
    expect((await call(t.client, "inspectCache", { name: "missing", deep: false })).status).to.equal(CacheStatus.CACHE_STATUS_MISSING);
  });

});
