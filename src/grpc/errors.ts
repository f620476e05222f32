// The one place where domain errors become gRPC statuses.
import { Metadata, type ServiceError, status } from "@grpc/grpc-js";
import { type ErrorKind, ModelCacheError, isAbort, isOutOfSpace, wellFormed } from "../errors.js";

const CODES: Record<ErrorKind, status> = {
  invalid_argument: status.INVALID_ARGUMENT,
  not_found: status.NOT_FOUND,
  already_exists: status.ALREADY_EXISTS,
  failed_precondition: status.FAILED_PRECONDITION,
  permission_denied: status.PERMISSION_DENIED,
  unauthenticated: status.UNAUTHENTICATED,
  resource_exhausted: status.RESOURCE_EXHAUSTED,
  aborted: status.ABORTED,
  cancelled: status.CANCELLED,
  unavailable: status.UNAVAILABLE,
  data_loss: status.DATA_LOSS,
  internal: status.INTERNAL,
};

export function toServiceError(err: unknown): ServiceError {
  const described = describe(err);
  // a lone surrogate (from a caller's value) would make grpc-js fail to encode
  // the grpc-message header and leave the call hanging: never send one
  const details = wellFormed(described.details);
  return Object.assign(new Error(details), { code: described.code, details, metadata: new Metadata() });
}

function describe(err: unknown): { code: status; details: string } {
  if (err instanceof ModelCacheError) return { code: CODES[err.kind], details: err.message };
  if (isAbort(err)) return { code: status.CANCELLED, details: "the call was cancelled" };
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const path = (err as NodeJS.ErrnoException | undefined)?.path;
  // a full disk the domain did not wrap is still the caller's to fix by freeing space, not an internal fault
  if (isOutOfSpace(err)) {
    const reason = code === "EDQUOT" ? "disk quota exceeded (EDQUOT)" : "no space left on device (ENOSPC)";
    return { code: status.RESOURCE_EXHAUSTED, details: `${reason}${path ? ` at '${path}'` : ""}: free space on the server's filesystem and try again` };
  }
  if (code && path) return { code: status.INTERNAL, details: `filesystem error ${code} at '${path}'` };
  return { code: status.INTERNAL, details: `internal error: ${err instanceof Error ? err.message : String(err)}` };
}
