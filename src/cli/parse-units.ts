// Sizes and durations as people write them on a command line: '10GiB',
// '500MB', '1h', '15m'. A value that does not parse, or lies outside what
// the flag allows, is a usage error naming what the flag takes.
import { InvalidArgumentError } from "commander";

const SIZE_UNITS: Record<string, number> = {
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  pb: 1e15,
  kib: 2 ** 10,
  mib: 2 ** 20,
  gib: 2 ** 30,
  tib: 2 ** 40,
  pib: 2 ** 50,
};
const SIZE_FORM = "bytes, or a number with B, KB, MB, GB, TB, PB (powers of 1000) or KiB, MiB, GiB, TiB, PiB (powers of 1024), such as 500MB or 10GiB";

/** Bytes that `text` names; a fraction of a unit is rounded down to whole bytes. */
export function parseSize(text: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(text.trim());
  const unit = match ? SIZE_UNITS[(match[2] || "b").toLowerCase()] : undefined;
  const bytes = match && unit !== undefined ? Math.floor(Number(match[1]) * unit) : NaN;
  if (!Number.isSafeInteger(bytes)) throw new InvalidArgumentError(`It takes ${SIZE_FORM}.`);
  return bytes;
}

/** A parser for a size flag from `least` to `most` bytes; keeps the bytes as text, so defaults and values share a type. */
export function size(least: number, most = Number.MAX_SAFE_INTEGER): (value: string) => string {
  return (value) => {
    const bytes = parseSize(value);
    if (bytes < least || bytes > most) throw new InvalidArgumentError(`It takes a size from ${least} to ${most} bytes (${SIZE_FORM}).`);
    return String(bytes);
  };
}

const DURATION_UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86_400 };
const DURATION_FORM = "seconds, or a whole number with s, m, h or d, such as 30s, 15m, 6h or 1d";

/** Seconds that `text` names. */
export function parseDuration(text: string): number {
  const match = /^(\d+)\s*([smhd]?)$/i.exec(text.trim());
  const seconds = match ? Number(match[1]) * DURATION_UNITS[(match[2] || "s").toLowerCase()]! : NaN;
  if (!Number.isSafeInteger(seconds)) throw new InvalidArgumentError(`It takes ${DURATION_FORM}.`);
  return seconds;
}

/** A parser for a duration flag from `least` to `most` seconds; keeps the seconds as text. */
export function duration(least: number, most: number): (value: string) => string {
  return (value) => {
    const seconds = parseDuration(value);
    if (seconds < least || seconds > most) throw new InvalidArgumentError(`It takes a duration from ${least} to ${most} seconds (${DURATION_FORM}).`);
    return String(seconds);
  };
}
