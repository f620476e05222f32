// ListLeases: which services hold a model's install (or every install) now.
import { getModel } from "../registry/get-model.js";
import type { Runtime } from "../runtime.js";
import type { Lease } from "./leases.js";

/** The live leases, of `name` or (when empty) of every model, the one ending first first. */
export async function listLeases(runtime: Pick<Runtime, "leases" | "registry">, name: string): Promise<Lease[]> {
  if (name === "") return runtime.leases.list();
  // an unknown name is NOT_FOUND rather than an empty list: a typo should not read as "not leased"
  await getModel(runtime.registry, name);
  return runtime.leases.list(name);
}
