// Runs the real modelcache binary as a child process against a server.
import { spawn } from "node:child_process";
import { join } from "node:path";

export const BIN = join(import.meta.dirname, "..", "..", "bin", "modelcache.js");

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface CliOptions {
  stdin?: string;
  env?: Record<string, string>;
  /** acts on the child while it runs */
  during?: (child: ReturnType<typeof spawn>, out: () => string) => void;
}

export function runCli(address: string, args: string[], options: CliOptions = {}): Promise<CliRun> {
  const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, MODELCACHE_ADDRESS: address, ...options.env }, stdio: ["pipe", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  child.stdin!.end(options.stdin ?? "");
  options.during?.(child, () => stdout);
  return new Promise((resolve) => child.on("exit", (code) => resolve({ code, stdout, stderr })));
}
