// What the deploy files (deploy/) say, read the way their tools read them, and
// what the server accepts: serve's flags and environment variables, from
// `modelcache serve --help` of the built binary.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { runCli } from "./run-cli.js";

export const ROOT = join(import.meta.dirname, "..", "..");
export const readRepoFile = (file: string) => readFile(join(ROOT, file), "utf8");

export interface ServeFlags {
  /** long flags without values (switches) and with values, e.g. "--offline", "--listen" */
  switches: Set<string>;
  valued: Set<string>;
  /** MODELCACHE_* variables serve reads, and the other variables its help names (HF_ENDPOINT, ...) */
  env: Set<string>;
}

/** serve's flags as `modelcache serve --help` prints them (the binary, so `npm run build` first). */
export const serveFlags = () => commandFlags(["serve"]);

/** The flags a command accepts, its own and the program's (for a client command: --address, --token, ...). */
export async function commandFlags(command: string[]): Promise<ServeFlags> {
  const pages = [(await runCli("", [...command, "--help"])).stdout];
  if (command[0] !== "serve") pages.push((await runCli("", ["--help"])).stdout);
  if (!pages[0]!.startsWith("Usage:")) throw new Error(`modelcache ${command.join(" ")} --help failed (run 'npm run build' first)`);
  const switches = new Set<string>();
  const valued = new Set<string>();
  const page = pages.join("\n");
  for (const m of page.matchAll(/^ {2}(?:-\w, )?(--[a-z0-9-]+)( <[^>]+>| \[[^\]]+\])?/gm)) (m[2] ? valued : switches).add(m[1]!);
  switches.delete("--help");
  const env = new Set([...page.matchAll(/\b(MODELCACHE_[A-Z0-9_]+|[A-Z][A-Z0-9]*_[A-Z0-9_]+)\b/g)].map((m) => m[1]!));
  return { switches, valued, env };
}

/** The flags (--x, --x=v) an argument list passes, each with its value when it takes one. */
export function flagsOf(args: string[], flags: ServeFlags): { unknown: string[]; values: Map<string, string> } {
  const unknown: string[] = [];
  const values = new Map<string, string>();
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (!arg.startsWith("--")) continue;
    const [name, inline] = arg.includes("=") ? [arg.slice(0, arg.indexOf("=")), arg.slice(arg.indexOf("=") + 1)] : [arg, undefined];
    if (flags.valued.has(name)) values.set(name, inline ?? args[++i] ?? "");
    else if (flags.switches.has(name)) values.set(name, "");
    else unknown.push(name);
  }
  return { unknown, values };
}
