// The server's structured logger: JSON lines on stdout.
import { pino, type Logger, type LevelWithSilent } from "pino";

export function createLogger(level: LevelWithSilent = "info"): Logger {
  return pino({ level, base: { service: "modelcache" } });
}
