// Flag values checked where they are typed, before anything is sent or
// started: a bad value is a usage error (exit 2) that names the flag and what
// it takes, not a serialization failure on the wire.
import { LISTEN_ADDRESS_FORM, isHostAndPort } from "../server/listen-address.js";
import { type Command, Help, InvalidArgumentError, type Option } from "commander";

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
  const address = value.trim();
  // grpc-js also listens on a unix socket
  if (!address.startsWith("unix:") && !isHostAndPort(address)) throw new InvalidArgumentError(`It is malformed: give ${LISTEN_ADDRESS_FORM}.`);
  return address;
}

/** Help that marks the options a command cannot run without. */
export const helpMarkingRequired: Partial<Help> = {
  optionDescription(option: Option): string {
    const described = new Help().optionDescription(option);
    return option.mandatory ? `${described} (required)` : described;
  },
};

/**
 * A usage error prints the error and one line naming the command's --help,
 * not the whole help page, which would push the error off the screen.
 */
export function pointUsageErrorsToHelp(command: Command, path = command.name()): void {
  command.showHelpAfterError(`hint: '${path} --help' shows what it takes`);
  for (const sub of command.commands) pointUsageErrorsToHelp(sub, `${path} ${sub.name()}`);
}
