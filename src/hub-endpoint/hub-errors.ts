// The hub protocol's "not found" answers: a ModelCacheError of kind not_found
// that also carries the X-Error-Code the Hugging Face clients branch on
// (RepoNotFound, RevisionNotFound, EntryNotFound), so the domain keeps one
// error type and the HTTP adapter can still say which of the three it is.
import { ModelCacheError } from "../errors.js";

export type HubErrorCode = "RepoNotFound" | "RevisionNotFound" | "EntryNotFound";

const codes = new WeakMap<ModelCacheError, HubErrorCode>();

export function hubNotFound(code: HubErrorCode, message: string): ModelCacheError {
  const error = new ModelCacheError("not_found", message);
  codes.set(error, code);
  return error;
}

/** The X-Error-Code of an error made by hubNotFound, else undefined. */
export function hubErrorCodeOf(error: unknown): HubErrorCode | undefined {
  return error instanceof ModelCacheError ? codes.get(error) : undefined;
}
