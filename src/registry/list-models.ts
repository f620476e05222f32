// Every registered model, in name order (LevelDB keeps keys sorted).
import type { ModelRecord } from "./model-record.js";
import type { Registry } from "./open-registry.js";

export async function listModels(registry: Registry): Promise<ModelRecord[]> {
  return (await registry.models.values().all()).filter((record) => !record.unregistering);
}
