// Validates a whole list of specs before any is applied: every refusal names
// the entry (models[i]) and the field, and a name may be listed once.
import { ModelCacheError } from "../errors.js";
import type { ModelSpec, ModelSpecInput } from "../registry/model-record.js";
import { validateModelSpec } from "../registry/validate-model-spec.js";

export function validateSpecs(inputs: readonly ModelSpecInput[]): ModelSpec[] {
  const seen = new Map<string, number>();
  return inputs.map((input, index) => {
    let spec: ModelSpec;
    try {
      spec = validateModelSpec(input);
    } catch (err) {
      if (err instanceof ModelCacheError) throw new ModelCacheError(err.kind, `models[${index}]${err.message.startsWith("model.") ? err.message.slice("model".length) : `: ${err.message}`}`);
      throw err;
    }
    const earlier = seen.get(spec.name);
    if (earlier !== undefined) throw new ModelCacheError("invalid_argument", `models[${index}].name '${spec.name}' is also models[${earlier}].name: list each model once`);
    seen.set(spec.name, index);
    return spec;
  });
}
