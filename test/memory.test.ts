// The server's memory at rest: V8's young generation stays at its initial
// size through the start (it is the one part of the heap the server would
// otherwise grow then and keep).
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { credentials } from "@grpc/grpc-js";
import { expect } from "chai";
import { ModelCacheServiceClient } from "../generated/modelcache/v1/model_cache.js";

const BIN = join(import.meta.dirname, "..", "bin", "modelcache.js");
const PROBE = join(import.meta.dirname, "support", "heap-probe.cjs");

describe("server memory", () => {
  let dataDir: string;
  let child: ChildProcess | undefined;
  beforeEach(async () => {
    dataDir = await mkdtemp(join(tmpdir(), "modelcache-memory-"));
  });
  afterEach(async () => {
    if (child && child.exitCode === null) {
      child.kill("SIGINT");
      await once(child, "exit");
    }
    await rm(dataDir, { recursive: true, force: true });
  });

  it("keeps V8's young generation at its initial size through start", async function () {
    this.timeout(30_000);
    child = spawn(process.execPath, ["--require", PROBE, BIN, "serve", "--listen", "127.0.0.1:0", "--data-dir", dataDir, "--log-format", "json", "--log-level", "warn"], {
      stdio: ["ignore", "pipe", "inherit", "ipc"],
    });
    const address = await new Promise<string>((resolve, reject) => {
      createInterface({ input: child!.stdout! }).on("line", (line) => {
        const entry = JSON.parse(line) as { address?: string; msg?: string };
        if (entry.msg?.startsWith("authentication is off") && entry.address) resolve(entry.address);
      });
      child!.once("exit", (code) => reject(new Error(`the server exited with ${code}`)));
    });
    // a call, as the first client of a started server makes
    const client = new ModelCacheServiceClient(address, credentials.createInsecure());
    try {
      await new Promise((resolve, reject) => client.listModels({}, (err) => (err ? reject(err) : resolve(undefined))));
    } finally {
      client.close();
    }
    child.send("heap?");
    const [spaces] = (await once(child, "message")) as [{ space_name: string; space_size: number }[]];
    const young = spaces.find((s) => s.space_name === "new_space")!;
    // V8's initial young generation is 1 MiB per half, plus its pages' overhead; grown, it is 16 MiB per half
    expect(young.space_size).to.be.at.most(4 * 1024 * 1024);
  });
});
