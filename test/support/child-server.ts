// A modelcache server in a child process (the shipped entry point,
// bin/modelcache.js), so that a test can kill it with SIGKILL at any moment,
// as a power cut or the OOM killer would: no shutdown hook runs, nothing is
// flushed.
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { createWriteStream } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { credentials } from "@grpc/grpc-js";
import { ModelCacheServiceClient } from "../../generated/modelcache/v1/model_cache.js";

const BIN = join(import.meta.dirname, "..", "..", "bin", "modelcache.js");

export interface ChildServerOptions {
  dataDir: string;
  /** more `serve` flags */
  args?: string[];
  /** every line the server prints is appended here; without it, its stderr is the test's */
  logFile?: string;
  /** environment variables the server gets beside the test's own */
  env?: Record<string, string>;
}

export interface ChildServer {
  address: string;
  client: ModelCacheServiceClient;
  /** the server's process, for signals */
  process: ChildProcess;
  /** SIGKILL, then wait until the process is gone; safe to call twice */
  kill(): Promise<void>;
  /** resolves with the first JSON log line on stdout, printed so far or later, that `matches` */
  seen(matches: (entry: Record<string, unknown>) => boolean): Promise<Record<string, unknown>>;
}

export async function spawnServer(options: ChildServerOptions): Promise<ChildServer> {
  const args = [BIN, "serve", "--listen", "127.0.0.1:0", "--data-dir", options.dataDir, "--log-format", "json", ...(options.args ?? [])];
  const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", options.logFile ? "pipe" : "inherit"], env: { ...process.env, ...options.env } });
  const exited = once(child, "exit");
  const log = options.logFile ? createWriteStream(options.logFile, { flags: "a" }) : undefined;
  if (log) child.stderr!.pipe(log, { end: false });
  const entries: Record<string, unknown>[] = [];
  const waiting: { matches: (entry: Record<string, unknown>) => boolean; resolve: (entry: Record<string, unknown>) => void }[] = [];
  const address = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on("line", (line) => {
      log?.write(`${line}\n`);
      const entry = parse(line);
      if (entry) {
        entries.push(entry);
        for (const waiter of waiting.filter((w) => w.matches(entry))) {
          waiting.splice(waiting.indexOf(waiter), 1);
          waiter.resolve(entry);
        }
      }
      if (entry?.msg === "modelcache is serving" && typeof entry.address === "string") resolve(entry.address);
    });
    void exited.then(([code, signal]) => reject(new Error(`the server exited while starting (code ${code}, signal ${signal})${options.logFile ? `; see ${options.logFile}` : ""}`)));
  });
  const client = new ModelCacheServiceClient(address, credentials.createInsecure());
  return {
    address,
    client,
    process: child,
    async kill() {
      client.close();
      if (isRunning(child)) child.kill("SIGKILL");
      await exited;
      log?.end();
    },
    seen: (matches) =>
      new Promise((resolve) => {
        const found = entries.find(matches);
        if (found) resolve(found);
        else waiting.push({ matches, resolve });
      }),
  };
}

function isRunning(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

function parse(line: string): Record<string, unknown> | undefined {
  try {
    return JSON.parse(line) as Record<string, unknown>;
  } catch {
    // not a JSON log line (a stray line from a dependency): kept in the log file only
    return undefined;
  }
}
