// Brings the registry to a list of validated specs, through the same domain
// operations (and so the same per-model locks) as the RPCs. One apply runs
// at a time. A model with a pull queued or running is changed after that
// pull ends, so the pull never races the change: its install is of the spec
// it began with, and the next pull brings it in line.
import { Mutex } from "async-mutex";
import { ModelCacheError } from "../errors.js";
import { unregisterModel } from "../lifecycle/unregister-model.js";
import { listModels } from "../registry/list-models.js";
import type { ModelRecord, ModelSpec } from "../registry/model-record.js";
import { registerModel } from "../registry/register-model.js";
import { updateModel } from "../registry/update-model.js";
import type { Runtime } from "../runtime.js";
import { type ApplyScope, type ModelChange, managedByFile, ownedByFile, planChanges } from "./plan-changes.js";

export interface ApplyOptions {
  scope: ApplyScope;
  /** only plan */
  dryRun: boolean;
  signal: AbortSignal;
}

// one apply at a time per registry: two plans made from the same state would undo each other
const applying = new WeakMap<object, Mutex>();

/**
 * The plan for `desired`, applied unless dry-run. A failure part-way leaves
 * the changes made so far; applying again finishes. For the models file, a
 * model that cannot change now (FAILED_PRECONDITION, e.g. leased) is marked
 * `failed` and the others are applied.
 */
export async function applyModels(runtime: Runtime, desired: readonly ModelSpec[], options: ApplyOptions): Promise<ModelChange[]> {
  let mutex = applying.get(runtime.registry);
  if (!mutex) applying.set(runtime.registry, (mutex = new Mutex()));
  return mutex.runExclusive(async () => {
    const changes = planChanges(await listModels(runtime.registry), desired, options.scope, options.dryRun);
    if (options.dryRun) return changes;
    const managedBy = options.scope.by === "models-file" ? "models-file" : undefined;
    const guard = options.scope.by === "rpc" ? refuseFileTakeover(options.scope.modelsFile) : undefined;
    const pulling = (change: ModelChange) => runtime.pulls.find(change.name) !== undefined;
    // models without a pull first, so that a long pull does not hold back the rest
    const ordered = [...changes.filter((c) => !pulling(c)), ...changes.filter(pulling)];
    for (const change of ordered) {
      options.signal.throwIfAborted();
      if (change.action === "unchanged") continue;
      try {
        await applyChange(runtime, change, managedBy, guard, options.signal);
      } catch (err) {
        // the file's apply is not held up by one model that cannot change now
        // (a lease on a model it removes): the rest is applied, that one tried again later
        if (options.scope.by !== "models-file" || options.signal.aborted || !(err instanceof ModelCacheError) || err.kind !== "failed_precondition") throw err;
        change.failed = err.message;
      }
    }
    return changes;
  });
}

async function applyChange(runtime: Runtime, change: ModelChange, managedBy: "models-file" | undefined, guard: ((current: ModelRecord) => void) | undefined, signal: AbortSignal): Promise<void> {
  if (change.action === "create") return void (await registerModel(runtime.registry, change.spec!, managedBy));
  await afterPull(runtime, change.name);
  if (change.action === "update") await updateModel(runtime.registry, change.name, change.spec!, { managedBy, check: guard });
  else await unregisterModel(runtime, change.name, true, signal, guard);
}

/** Resolves once the model has no pull queued or running. */
async function afterPull(runtime: Runtime, name: string): Promise<void> {
  for (let job = runtime.pulls.find(name); job; job = runtime.pulls.find(name)) await job.done;
}

/** For an RPC apply: refuses a model the models file took over after the plan was made. */
function refuseFileTakeover(modelsFile: string | undefined): (current: ModelRecord) => void {
  return (current) => {
    if (ownedByFile(current, modelsFile)) throw managedByFile(current.name, modelsFile, "ApplyModels would change it");
  };
}
