// What bringing the registry to a list of specs would do to each model:
// create, update (naming the fields that differ), delete, or leave alone.
// Who owns a model decides what may happen to it: the models file removes
// only what it created, an RPC caller never changes what the file manages.
import { ModelCacheError } from "../errors.js";
import type { ModelRecord, ModelSpec } from "../registry/model-record.js";

export type ChangeAction = "create" | "update" | "delete" | "unchanged";

export interface ModelChange {
  name: string;
  action: ChangeAction;
  /** for an update: the fields that differ, in snake_case ("managed_by" when the file takes a model over) */
  changedFields: string[];
  /** the spec to write, for create and update */
  spec?: ModelSpec;
  /** for a dry run: why applying would refuse this change (the models file manages the model) */
  refused?: string;
  /** why the change could not be made now (a models-file apply goes on with the others, and tries it again later) */
  failed?: string;
}

/**
 * Who asks: the server's models file, or an ApplyModels caller (prune: also
 * delete what it does not list). `modelsFile` is the file the server follows:
 * without one, models an earlier file managed are ordinary models again.
 */
export type ApplyScope = { by: "models-file" } | { by: "rpc"; prune: boolean; modelsFile: string | undefined };

const SPEC_FIELDS: readonly [keyof ModelSpec, string][] = [
  ["source", "source"],
  ["revision", "revision"],
  ["task", "task"],
  ["dimensions", "dimensions"],
  ["engine", "engine"],
  ["pullPolicy", "pull_policy"],
  ["trustPolicy", "trust_policy"],
  ["acknowledgeRemoteCodeRisk", "acknowledge_remote_code_risk"],
  ["credentialAlias", "credential_alias"],
  ["include", "include"],
  ["exclude", "exclude"],
  ["pinned", "pinned"],
];

/**
 * The changes, sorted by name; refuses (changing nothing) an RPC plan that
 * would change a model the file manages, or, for a dry run, marks those
 * changes `refused` so that the whole plan can be shown.
 */
export function planChanges(current: readonly ModelRecord[], desired: readonly ModelSpec[], scope: ApplyScope, dryRun = false): ModelChange[] {
  const registered = new Map(current.map((record) => [record.name, record]));
  const listed = new Set(desired.map((spec) => spec.name));
  const changes: ModelChange[] = [];
  for (const spec of desired) {
    const record = registered.get(spec.name);
    if (!record) {
      changes.push({ name: spec.name, action: "create", changedFields: [], spec });
      continue;
    }
    const changedFields = differences(record, spec);
    if (scope.by === "models-file" && record.managedBy !== "models-file") changedFields.push("managed_by");
    if (scope.by === "rpc" && ownedByFile(record, scope.modelsFile) && changedFields.length > 0) {
      const refusal = managedByFile(spec.name, scope.modelsFile, `ApplyModels would change ${changedFields.join(", ")}`);
      if (!dryRun) throw refusal;
      changes.push({ name: spec.name, action: "update", changedFields, refused: refusal.message });
      continue;
    }
    changes.push(changedFields.length > 0 ? { name: spec.name, action: "update", changedFields, spec } : { name: spec.name, action: "unchanged", changedFields: [] });
  }
  for (const record of current) {
    if (listed.has(record.name)) continue;
    const removable = scope.by === "models-file" ? record.managedBy === "models-file" : scope.prune && !ownedByFile(record, scope.modelsFile);
    if (removable) changes.push({ name: record.name, action: "delete", changedFields: [] });
  }
  return changes.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

function differences(record: ModelRecord, spec: ModelSpec): string[] {
  // records written before include/exclude existed have neither
  // records written before include/exclude (or pins) existed have none
  const normalised = { ...record, include: record.include ?? [], exclude: record.exclude ?? [], pinned: record.pinned ?? false };
  return SPEC_FIELDS.filter(([field]) => JSON.stringify(normalised[field]) !== JSON.stringify(spec[field])).map(([, label]) => label);
}

/** Whether RPCs must leave `record` to the models file: it is the file's, and the server follows one. */
export function ownedByFile(record: ModelRecord, modelsFile: string | undefined): boolean {
  return modelsFile !== undefined && record.managedBy === "models-file";
}

/** The refusal of an RPC that would change or remove a model the models file manages. */
export function managedByFile(name: string, modelsFile: string | undefined, what: string): ModelCacheError {
  return new ModelCacheError(
    "failed_precondition",
    `local AI model '${name}' is managed by the models file${modelsFile ? ` '${modelsFile}'` : ""}: ${what}; change or remove it in that file instead (the server applies the file when it changes)`,
  );
}
