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
  /** resolves with the first line, logged so far or later, that `matches` */
  seen(matches: (line: LogLine) => boolean): Promise<LogLine>;
}

export function captureLogs(level: LevelWithSilent = "info"): LogCapture {
  const lines: LogLine[] = [];
  const waiting: { matches: (line: LogLine) => boolean; resolve: (line: LogLine) => void }[] = [];
  let raw = "";
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      raw += chunk.toString();
      for (const text of chunk.toString().split("\n").filter(Boolean)) {
        const line = JSON.parse(text) as LogLine;
        lines.push(line);
        for (const waiter of waiting.filter((w) => w.matches(line))) {
          waiting.splice(waiting.indexOf(waiter), 1);
          waiter.resolve(line);
        }
      }
      done();
    },
  });
  const seen = (matches: (line: LogLine) => boolean) =>
    new Promise<LogLine>((resolve) => {
      const found = lines.find(matches);
      if (found) resolve(found);
      else waiting.push({ matches, resolve });
    });
  return { logger: pino({ level }, sink), lines, audit: () => lines.filter((l) => l.audit), raw: () => raw, seen };
}
