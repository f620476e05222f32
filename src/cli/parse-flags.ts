// Flag values checked where they are typed, before anything is sent or
// started: a bad value is a usage error (exit 2) that names the flag and what
// it takes, not a serialization failure on the wire.
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

/** Help that marks the options a command cannot run without. */
export const helpMarkingRequired: Partial<Help> = {
  optionDescription(option: Option): string {
    const described = new Help().optionDescription(option);
    return option.mandatory ? `${described} (required)` : described;
  },
};
