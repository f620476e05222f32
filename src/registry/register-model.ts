// Adds a new model to the registry.
import { ModelCacheError } from "../errors.js";
import type { ManagedBy, ModelRecord, ModelSpecInput } from "./model-record.js";
import type { Registry } from "./open-registry.js";
import { validateModelSpec } from "./validate-model-spec.js";

/** `managedBy` marks a model registered from the models file. */
export async function registerModel(registry: Registry, input: ModelSpecInput, managedBy?: ManagedBy): Promise<ModelRecord> {
  const spec = validateModelSpec(input);
  return registry.records.run(spec.name, undefined, async () => {
    if ((await registry.models.get(spec.name)) !== undefined) {
      throw new ModelCacheError("already_exists", `local AI model '${spec.name}' is already registered; use UpdateModel to change it`);
    }
    const now = Date.now();
    const record: ModelRecord = { ...spec, provider: "local", status: "registered", createdAtMs: now, updatedAtMs: now, ...(managedBy ? { managedBy } : {}) };
    await registry.models.put(spec.name, record);
    return record;
  });
}
