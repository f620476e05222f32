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

/**
 * A pull this endpoint started (or joined) failed: the upstream's refusal of
 * the model's credential is no refusal of this caller's, so it must not
 * answer 401 or 403 (a client would blame its own token): it is a 503
 * naming the upstream's words. Other errors pass through.
 */
export function pullThroughError(name: string, error: unknown): unknown {
  if (error instanceof ModelCacheError && (error.kind === "unauthenticated" || error.kind === "permission_denied")) {
    return new ModelCacheError("unavailable", `the pull of model '${name}' was refused upstream: ${error.message}`, { cause: error });
  }
  return error;
}
