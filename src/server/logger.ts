// The server's structured logger: JSON lines on stdout, or pino-pretty's
// readable lines when a person is watching (a terminal, with the default
// --log-format auto).
import { createRequire } from "node:module";
import { pino, type Logger, type LevelWithSilent } from "pino";
import type { PrettyOptions, PrettyStream } from "pino-pretty";

export type LogFormat = "json" | "pretty" | "auto";

export function createLogger(level: LevelWithSilent = "info", format: LogFormat = "json"): Logger {
  const options = { level, base: { service: "modelcache" } };
  const readable = format === "pretty" || (format === "auto" && process.stdout.isTTY === true);
  if (!readable) return pino(options);
  // synchronous, on this thread: a fatal line at start still reaches the terminal before exit
  // loaded only for readable lines; synchronously, as creating a logger is
  const pretty = createRequire(import.meta.url)("pino-pretty") as (options: PrettyOptions) => PrettyStream;
  return pino(options, pretty({ colorize: process.stdout.isTTY === true, sync: true, ignore: "service,pid,hostname", translateTime: "SYS:HH:MM:ss.l" }));
}
