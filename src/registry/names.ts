// The rule every model name and credential alias follows. Names become
// directory names under the cache root, so this rule is also a path guard.
import { ModelCacheError, quote } from "../errors.js";

const NAME = /^[A-Za-z0-9_-]{1,128}$/;

export function isValidName(value: string): boolean {
  return NAME.test(value);
}

/** Throws invalid_argument naming `field` unless `value` follows the name rule. */
export function checkName(field: string, value: string): string {
  if (value === "") {
    throw new ModelCacheError("invalid_argument", `${field} is required: 1-128 characters of A-Z, a-z, 0-9, '_' or '-'`);
  }
  if (!NAME.test(value)) {
    throw new ModelCacheError(
      "invalid_argument",
      `${field} ${quote(value)} is invalid: use 1-128 characters of A-Z, a-z, 0-9, '_' or '-' (no dots, spaces or slashes)`,
    );
  }
  return value;
}
