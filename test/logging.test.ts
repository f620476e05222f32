// What the server logs: one line per RPC, a line when a pull starts and one
// when it ends (bytes, time, rate), never a secret; readable lines on a
// terminal, JSON lines elsewhere.
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { type LogCapture, type LogLine, captureLogs } from "./support/log-capture.js";
import { FakeHub } from "./support/fake-hub.js";
import { FIXTURE_DIR, type TestServer, call, modelSpec, pull, pullOk, startTestServer } from "./support/test-server.js";

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
});

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
