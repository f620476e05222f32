// A modelcache server in a child process, so that it can be killed with
// SIGKILL at any moment, as a power cut or the OOM killer would: no shutdown
// hook runs, nothing is flushed. It runs the TypeScript sources through tsx.
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { createWriteStream, type WriteStream } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { credentials } from "@grpc/grpc-js";
import { ModelCacheServiceClient } from "../../generated/modelcache/v1/model_cache.js";

const PROJECT = join(import.meta.dirname, "..", "..");

export interface ChildServerOptions {
  dataDir: string;
  hubUrl: string;
  fixtureRoot: string;
  /** every line the server prints is appended here, for the post-mortem of a failed cycle */
  logFile: string;
}

export class ChildServer {
  private constructor(
    private readonly child: ChildProcess,
    readonly client: ModelCacheServiceClient,
    private readonly log: WriteStream,
  ) {}

  static async start(options: ChildServerOptions): Promise<ChildServer> {
    const args = ["--import", "tsx", join(PROJECT, "src", "cli", "main.ts"), "serve"];
    args.push("--listen", "127.0.0.1:0", "--data-dir", options.dataDir, "--hub-url", options.hubUrl, "--fixture-root", options.fixtureRoot);
    args.push("--log-format", "json", "--log-level", "info", "--max-concurrent-pulls", "2");
    const child = spawn(process.execPath, args, { cwd: PROJECT, stdio: ["ignore", "pipe", "pipe"] });
    const log = createWriteStream(options.logFile, { flags: "a" });
    child.stderr!.pipe(log, { end: false });
    const address = await new Promise<string>((resolve, reject) => {
      const lines = createInterface({ input: child.stdout! });
      lines.on("line", (line) => {
        log.write(`${line}\n`);
        const entry = parse(line);
        if (entry?.msg === "modelcache is serving" && typeof entry.address === "string") resolve(entry.address);
      });
      child.once("exit", (code, signal) => reject(new Error(`the server exited while starting (code ${code}, signal ${signal}); see ${options.logFile}`)));
      child.once("error", reject);
    });
    return new ChildServer(child, new ModelCacheServiceClient(address, credentials.createInsecure()), log);
  }

  /** SIGKILL, then wait until the process is gone. */
  async kill(): Promise<void> {
    this.client.close();
    if (this.child.exitCode === null && this.child.signalCode === null) {
      const exited = once(this.child, "exit");
      this.child.kill("SIGKILL");
      await exited;
    }
    this.log.end();
  }
}

function parse(line: string): Record<string, unknown> | undefined {
  try {
    return JSON.parse(line) as Record<string, unknown>;
  } catch {
    // not a JSON log line (a stray line from a dependency): kept in the log file only
    return undefined;
  }
}
