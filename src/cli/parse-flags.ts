// Flag values checked where they are typed, before anything is sent or
// started: a bad value is a usage error (exit 2) that names the flag and what
// it takes, not a serialization failure on the wire.
import { isIP } from "node:net";
import { Help, InvalidArgumentError, type Option } from "commander";

/** A parser for a flag that takes a whole number from `least` to `most`; keeps the text, so defaults and values share a type. */
export function wholeNumber(least: number, most = Number.MAX_SAFE_INTEGER): (value: string) => string {
  return (value) => {
    const trimmed = value.trim();
    const n = Number(trimmed);
    if (!/^\d+$/.test(trimmed) || !Number.isSafeInteger(n) || n < least || n > most) {
      throw new InvalidArgumentError(`It takes a whole number from ${least} to ${most}.`);
    }
    return trimmed;
  };
}

/**
 * A parser for a flag that takes host:port (IPv6 in brackets), so that a typo
 * is reported as malformed rather than as some later rule about the address.
 */
export function hostAndPort(value: string): string {
  const match = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?):(\d{1,5})$/.exec(value.trim());
  if (!match || Number(match[2]) > 65535 || (match[1]!.startsWith("[") && isIP(match[1]!.slice(1, -1)) !== 6)) {
    throw new InvalidArgumentError("It is malformed: give host:port, such as 127.0.0.1:50051, [::1]:50051 or localhost:50051 (port 0 picks a free one).");
  }
  return value.trim();
}

/** Help that marks the options a command cannot run without. */
export const helpMarkingRequired: Partial<Help> = {
  optionDescription(option: Option): string {
    const described = new Help().optionDescription(option);
    return option.mandatory ? `${described} (required)` : described;
  },
};
