// The one error type the domain throws. Its kind says what went wrong in
// words a caller can act on; src/grpc/errors.ts maps kinds to status codes.

export type ErrorKind =
  | "invalid_argument"
  | "not_found"
  | "already_exists"
  | "failed_precondition"
  | "permission_denied"
  | "unauthenticated"
  | "resource_exhausted"
  | "aborted"
  | "cancelled"
  | "unavailable"
  | "data_loss"
  | "internal";

const BRAND = Symbol.for("modelcache.ModelCacheError");

export class ModelCacheError extends Error {
  override readonly name = "ModelCacheError";
  readonly [BRAND] = true;
  constructor(
    readonly kind: ErrorKind,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  // recognised by a registered symbol rather than by class: a module loaded
  // on demand may be a second copy of this one under some loaders, and its
  // errors must still map to their status
  static override [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === "object" && value !== null && (value as { [BRAND]?: unknown })[BRAND] === true;
  }
}

const MAX_QUOTED = 80;

/** `text` with each lone surrogate replaced by U+FFFD (String.prototype.toWellFormed, which Node 20's types lack). */
export function wellFormed(text: string): string {
  return text.replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, "\uFFFD");
}

/** Quotes a caller-supplied value for a message, cut to 80 characters. */
export function quote(value: string): string {
  // cut by code points, so no emoji is split into a lone surrogate; two code
  // units per point at most, and one point more, tell whether anything was cut
  const points = Array.from(value.slice(0, (MAX_QUOTED + 1) * 2));
  const shown = wellFormed(points.length > MAX_QUOTED ? `${points.slice(0, MAX_QUOTED).join("")}...` : points.join(""));
  return `'${shown.replace(/[\u0000-\u001f\u007f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`)}'`;
}

/**
 * Wraps a filesystem failure as an error that says what failed and where:
 * resource_exhausted when the disk or a quota is full (retrying cannot help,
 * freeing space can), internal otherwise. Errors that are already ours, and
 * aborts, pass through unchanged.
 */
export function filesystemError(what: string, path: string, err: unknown): Error {
  if (err instanceof ModelCacheError || isAbort(err)) return err as Error;
  const code = (err as NodeJS.ErrnoException)?.code;
  if (isOutOfSpace(err)) {
    const reason = code === "EDQUOT" ? "disk quota exceeded (EDQUOT)" : "no space left on device (ENOSPC)";
    return new ModelCacheError("resource_exhausted", `failed to ${what} '${path}': ${reason}; free space on that filesystem (PruneCache, DropCache, or outside the cache) and try again`, { cause: err });
  }
  const reason = code ?? (err instanceof Error ? err.message : String(err));
  return new ModelCacheError("internal", `failed to ${what} '${path}': ${reason}`, { cause: err });
}

export function isAbort(err: unknown): boolean {
  return err instanceof Error && (err.name === "AbortError" || (err as NodeJS.ErrnoException).code === "ABORT_ERR");
}

export function errorCode(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

/** Filesystem error codes that mean the disk (or the user's quota) is full. */
const OUT_OF_SPACE_CODES = new Set(["ENOSPC", "EDQUOT"]);
/** How LevelDB and other native code spell those errors in a message. */
const OUT_OF_SPACE_TEXT = /no space left on device|disk quota exceeded/i;

/**
 * Whether `err`, or an error it wraps, says the filesystem is full (ENOSPC) or
 * a quota is reached (EDQUOT): a local condition that retrying cannot fix.
 */
export function isOutOfSpace(err: unknown): boolean {
  for (const at of causeChain(err)) {
    const code = errorCode(at);
    if (code !== undefined && OUT_OF_SPACE_CODES.has(code)) return true;
    if (at instanceof Error && OUT_OF_SPACE_TEXT.test(at.message)) return true;
  }
  return false;
}

/** How a store's write error says which space ran out, in the words its messages use: the quota when `err` or an error it wraps says so, else the disk. */
export function spaceShortage(err: unknown): "disk quota exceeded" | "no space left on device" {
  for (const at of causeChain(err)) if (/quota/i.test(at instanceof Error ? at.message : String(at))) return "disk quota exceeded";
  return "no space left on device";
}

/** `err` and the errors it wraps (its `cause`, theirs...), eight at most. */
function* causeChain(err: unknown): Iterable<unknown> {
  for (let at = err, depth = 0; at !== undefined && at !== null && depth < 8; at = (at as { cause?: unknown }).cause, depth++) yield at;
}
