// A pino logger whose JSON lines a test can read back: every line parsed,
// the audit lines apart, and the raw text (to search for what must never
// appear, such as a secret).
import { Writable } from "node:stream";
import { type Logger, type LevelWithSilent, pino } from "pino";

export type LogLine = Record<string, unknown>;

export interface LogCapture {
  logger: Logger;
  lines: LogLine[];
  audit(): LogLine[];
  raw(): string;
}

export function captureLogs(level: LevelWithSilent = "info"): LogCapture {
  const lines: LogLine[] = [];
  let raw = "";
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      raw += chunk.toString();
      for (const line of chunk.toString().split("\n").filter(Boolean)) lines.push(JSON.parse(line) as LogLine);
      done();
    },
  });
  return { logger: pino({ level }, sink), lines, audit: () => lines.filter((l) => l.audit), raw: () => raw };
}
