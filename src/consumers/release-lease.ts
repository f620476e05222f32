// ReleaseLease: a service is done with an install before its lease runs out.
import { ModelCacheError, quote } from "../errors.js";
import type { Runtime } from "../runtime.js";

const MAX_LEASE_ID = 128;

/** true when a live lease ended; false for an unknown or expired one, which changes nothing. */
export function releaseLease(runtime: Pick<Runtime, "leases">, leaseId: string): Promise<boolean> {
  if (leaseId === "") throw new ModelCacheError("invalid_argument", "lease_id is required: give the lease_id a ResolveModel with lease_seconds returned");
  if (leaseId.length > MAX_LEASE_ID) throw new ModelCacheError("invalid_argument", `lease_id ${quote(leaseId)} is ${leaseId.length} characters long: lease ids are at most ${MAX_LEASE_ID}`);
  return runtime.leases.release(leaseId);
}
