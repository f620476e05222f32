// Translation between the wire messages and the domain's words. Enum numbers
// the domain does not know become refusals that name the field.
import type { InstallReport } from "../cache/inspect-install.js";
import type { Manifest as ManifestRecord } from "../cache/manifest.js";
import { ModelCacheError } from "../errors.js";
import { lastUsedAtMs, type PullPolicy as DomainPullPolicy, type ModelSpec as DomainSpec, type ModelRecord, type ModelSpecInput } from "../registry/model-record.js";
import type { PullEvent } from "../pull/pull-event.js";
import type { ModelChange as PlannedChange } from "../models-file/plan-changes.js";
import {
  CacheStatus,
  ChangeAction,
  type ModelChange,
  Engine,
  type InspectCacheResponse,
  type Manifest,
  type Model,
  ModelStatus,
  type ModelSpec,
  PullPolicy,
  type PullResponse,
  Task,
  TrustPolicy,
  UnhealthyReason,
} from "../../generated/modelcache/v1/model_cache.js";

export function specFromProto(spec: ModelSpec | undefined): ModelSpecInput {
  const s = spec ?? { name: "", source: "", revision: "", task: 0, dimensions: 0, engine: 0, pullPolicy: 0, trustPolicy: 0, acknowledgeRemoteCodeRisk: false, credentialAlias: "", include: [], exclude: [], pinned: false };
  return {
    name: s.name,
    source: s.source,
    revision: s.revision,
    task: word(s.task, { [Task.TASK_EMBEDDING]: "embedding" }, "TASK"),
    dimensions: s.dimensions,
    engine: word(s.engine, { [Engine.ENGINE_CANDLE]: "candle" }, "ENGINE"),
    pullPolicy: word(s.pullPolicy, { [PullPolicy.PULL_POLICY_NEVER]: "never", [PullPolicy.PULL_POLICY_IF_MISSING]: "if_missing", [PullPolicy.PULL_POLICY_ALWAYS]: "always" }, "PULL_POLICY"),
    trustPolicy: word(s.trustPolicy, { [TrustPolicy.TRUST_POLICY_DISABLED]: "disabled", [TrustPolicy.TRUST_POLICY_ALLOW_REMOTE_CODE]: "allow_remote_code" }, "TRUST_POLICY"),
    acknowledgeRemoteCodeRisk: s.acknowledgeRemoteCodeRisk,
    credentialAlias: s.credentialAlias,
    include: s.include,
    exclude: s.exclude,
    pinned: s.pinned,
  };
}

/** A request's pull policy: undefined when unset; a value the domain does not know is refused, naming the field. */
export function pullPolicyFromProto(value: number, field: string): DomainPullPolicy | undefined {
  if (value === 0) return undefined;
  const known = (Object.entries(PULL_POLICIES) as [DomainPullPolicy, number][]).find(([, n]) => n === value);
  if (known) return known[0];
  throw new ModelCacheError("invalid_argument", `${field} has an unknown value (${value}): give PULL_POLICY_NEVER, PULL_POLICY_IF_MISSING or PULL_POLICY_ALWAYS, or leave it unset for the model's own policy`);
}

/** undefined for 0 (unset), the domain word for a known value, else a label the validator will refuse. */
function word(value: number, known: Record<number, string>, prefix: string): string | undefined {
  if (value === 0) return undefined;
  return known[value] ?? `${prefix} value ${value}`;
}

const TASKS = { embedding: Task.TASK_EMBEDDING } as const;
const ENGINES = { candle: Engine.ENGINE_CANDLE } as const;
const PULL_POLICIES = { never: PullPolicy.PULL_POLICY_NEVER, if_missing: PullPolicy.PULL_POLICY_IF_MISSING, always: PullPolicy.PULL_POLICY_ALWAYS } as const;
const TRUST_POLICIES = { disabled: TrustPolicy.TRUST_POLICY_DISABLED, allow_remote_code: TrustPolicy.TRUST_POLICY_ALLOW_REMOTE_CODE } as const;
const MODEL_STATUSES = { registered: ModelStatus.MODEL_STATUS_REGISTERED, installed: ModelStatus.MODEL_STATUS_INSTALLED, unhealthy: ModelStatus.MODEL_STATUS_UNHEALTHY } as const;

/** A validated spec as the wire's ModelSpec (every enum set explicitly). */
export function specToProto(spec: DomainSpec): ModelSpec {
  return {
    name: spec.name,
    source: spec.source,
    revision: spec.revision,
    task: TASKS[spec.task],
    dimensions: spec.dimensions,
    engine: ENGINES[spec.engine],
    pullPolicy: PULL_POLICIES[spec.pullPolicy],
    trustPolicy: TRUST_POLICIES[spec.trustPolicy],
    acknowledgeRemoteCodeRisk: spec.acknowledgeRemoteCodeRisk,
    credentialAlias: spec.credentialAlias,
    include: spec.include,
    exclude: spec.exclude,
    pinned: spec.pinned,
  };
}

export function modelToProto(record: ModelRecord, leases = 0): Model {
  return {
    name: record.name,
    provider: record.provider,
    source: record.source,
    revision: record.revision,
    task: TASKS[record.task],
    dimensions: record.dimensions,
    engine: ENGINES[record.engine],
    pullPolicy: PULL_POLICIES[record.pullPolicy],
    trustPolicy: TRUST_POLICIES[record.trustPolicy],
    credentialAlias: record.credentialAlias,
    status: MODEL_STATUSES[record.status],
    createdAt: new Date(record.createdAtMs),
    updatedAt: new Date(record.updatedAtMs),
    cacheDir: record.install?.cacheDir ?? "",
    installedAt: record.install ? new Date(record.install.installedAtMs) : undefined,
    cacheSizeBytes: record.install?.sizeBytes ?? 0,
    include: record.include ?? [],
    exclude: record.exclude ?? [],
    resolvedCommit: record.install?.resolvedCommit ?? "",
    managedBy: record.managedBy ?? "",
    pinned: record.pinned ?? false,
    lastUsedAt: lastUsedAtMs(record) === undefined ? undefined : new Date(lastUsedAtMs(record)!),
    leases,
  };
}

const CHANGE_ACTIONS = { create: ChangeAction.CHANGE_ACTION_CREATE, update: ChangeAction.CHANGE_ACTION_UPDATE, delete: ChangeAction.CHANGE_ACTION_DELETE, unchanged: ChangeAction.CHANGE_ACTION_UNCHANGED } as const;

export function changeToProto(change: PlannedChange): ModelChange {
  return { name: change.name, action: CHANGE_ACTIONS[change.action], changedFields: change.changedFields };
}

export function manifestToProto(manifest: ManifestRecord): Manifest {
  return {
    name: manifest.name,
    source: manifest.source,
    revision: manifest.revision,
    task: manifest.task,
    engine: manifest.engine,
    dimensions: manifest.dimensions,
    installedAt: new Date(manifest.installedAtMs),
    totalSizeBytes: manifest.totalSizeBytes,
    files: manifest.files.map((f) => ({ path: f.path, sha256: f.sha256, sizeBytes: f.sizeBytes })),
    resolvedCommit: manifest.resolvedCommit,
  };
}

const CACHE_STATUSES = { missing: CacheStatus.CACHE_STATUS_MISSING, installed: CacheStatus.CACHE_STATUS_INSTALLED, unhealthy: CacheStatus.CACHE_STATUS_UNHEALTHY } as const;
const REASONS = {
  manifest_unreadable: UnhealthyReason.UNHEALTHY_REASON_MANIFEST_UNREADABLE,
  manifest_invalid: UnhealthyReason.UNHEALTHY_REASON_MANIFEST_INVALID,
  file_missing: UnhealthyReason.UNHEALTHY_REASON_FILE_MISSING,
  size_mismatch: UnhealthyReason.UNHEALTHY_REASON_SIZE_MISMATCH,
  checksum_mismatch: UnhealthyReason.UNHEALTHY_REASON_CHECKSUM_MISMATCH,
} as const;

export function reportToProto(name: string, report: InstallReport): InspectCacheResponse {
  return {
    name,
    status: CACHE_STATUSES[report.status],
    cacheDir: report.cacheDir,
    manifest: report.manifest ? manifestToProto(report.manifest) : undefined,
    detail: report.detail ?? "",
    reason: report.reason ? REASONS[report.reason] : UnhealthyReason.UNHEALTHY_REASON_UNSPECIFIED,
    footprintBytes: report.footprintBytes,
    exclusiveBytes: report.exclusiveBytes ?? 0,
  };
}

export function pullEventToProto(name: string, event: PullEvent): PullResponse {
  switch (event.type) {
    case "queued":
      return { name, queued: { position: event.position, running: event.running } };
    case "started":
      return { name, started: { source: event.source, fileCount: event.fileCount, totalBytes: event.totalBytes, reusedBytes: event.reusedBytes, evictedModels: event.evictedModels } };
    case "file_started":
      return { name, fileStarted: { path: event.path, index: event.index, sizeBytes: event.sizeBytes } };
    case "file_progress":
      return {
        name,
        fileProgress: { path: event.path, bytesDone: event.bytesDone, sizeBytes: event.sizeBytes, totalBytesDone: event.totalBytesDone, totalBytes: event.totalBytes },
      };
    case "file_completed":
      return { name, fileCompleted: { path: event.path, sha256: event.sha256, sizeBytes: event.sizeBytes, reused: event.reused } };
    case "completed":
      return { name, completed: { status: CacheStatus.CACHE_STATUS_INSTALLED, cacheDir: event.cacheDir, manifest: manifestToProto(event.manifest), reusedBytes: event.reusedBytes, peerBytes: event.peerBytes ?? 0 } };
  }
}
