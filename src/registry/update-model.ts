// Replaces a registered model's spec. The install, if any, is left alone:
// the next Pull brings it in line with the new spec.
import { ModelCacheError, quote } from "../errors.js";
import { notRegistered } from "./get-model.js";
import type { ManagedBy, ModelRecord, ModelSpecInput } from "./model-record.js";
import { checkName } from "./names.js";
import type { Registry } from "./open-registry.js";
import { validateModelSpec } from "./validate-model-spec.js";

export interface UpdateOptions {
  /** runs on the current record under the record's lock; throws to refuse the update */
  check?: (current: ModelRecord) => void;
  /** the owner the updated record gets (the models file taking a model over) */
  managedBy?: ManagedBy;
  /** applies only while the record's updatedAtMs is still this (a caller's read-modify-write) */
  ifUpdatedAtMs?: number;
}

export async function updateModel(registry: Registry, name: string, input: ModelSpecInput, options: UpdateOptions = {}): Promise<ModelRecord> {
  checkName("name", name);
  if (input.name !== "" && input.name !== name) {
    throw new ModelCacheError(
      "invalid_argument",
      `model.name ${quote(input.name)} does not match name '${name}': a model cannot be renamed; leave model.name empty or equal to name`,
    );
  }
  const spec = validateModelSpec({ ...input, name });
  return registry.records.run(name, undefined, async () => {
    const current = await registry.models.get(name);
    if (current === undefined) throw notRegistered(name);
    if (options.ifUpdatedAtMs !== undefined && current.updatedAtMs !== options.ifUpdatedAtMs) {
      throw new ModelCacheError(
        "aborted",
        `model '${name}' changed since if_updated_at ${new Date(options.ifUpdatedAtMs).toISOString()} (now updated at ${new Date(current.updatedAtMs).toISOString()}): read it again with GetModel and retry the update`,
      );
    }
    options.check?.(current);
    const record: ModelRecord = {
      ...current,
      ...spec,
      ...(options.managedBy ? { managedBy: options.managedBy } : {}),
      updatedAtMs: Math.max(Date.now(), current.updatedAtMs + 1),
    };
    await registry.models.put(name, record);
    return record;
  });
}
