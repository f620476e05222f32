// Reads one model's record.
import { ModelCacheError } from "../errors.js";
import type { ModelRecord } from "./model-record.js";
import { checkName } from "./names.js";
import type { Registry } from "./open-registry.js";

export function notRegistered(name: string): ModelCacheError {
  return new ModelCacheError("not_found", `local AI model '${name}' is not registered`);
}

/** The record of a registered model; not_found otherwise. `field` names the request field for errors. */
export async function getModel(registry: Registry, name: string, field = "name"): Promise<ModelRecord> {
  return getModelNow(registry, name, field) ?? registered(name, await registry.models.get(name));
}

/**
 * getModel without waiting: a point read answered from the records last read,
 * or LevelDB's memtable or block cache, is cheaper synchronously than through
 * the thread pool. Undefined while the registry reopens (only a read through
 * the thread pool waits for it).
 */
export function getModelNow(registry: Registry, name: string, field = "name"): ModelRecord | undefined {
  checkName(field, name);
  return registry.db.readableSync ? registered(name, registry.modelRecords.readSync(name)) : undefined;
}

function registered(name: string, record: ModelRecord | undefined): ModelRecord {
  // a record marked as being unregistered is gone for callers (a restart finishes its removal)
  if (record === undefined || record.unregistering) throw notRegistered(name);
  return record;
}
