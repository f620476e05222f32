// What the registry stores for a model, in the domain's words. Records are
// JSON values in LevelDB, so they stay readable and independent of the
// proto's enum numbers.

export type Task = "embedding";
export type Engine = "candle";
export type PullPolicy = "never" | "if_missing" | "always";
export type TrustPolicy = "disabled" | "allow_remote_code";
export type ModelStatus = "registered" | "installed" | "unhealthy";

/** A caller's spec, as decoded from the wire: enums not yet checked. */
export interface ModelSpecInput {
  name: string;
  source: string;
  revision: string;
  /** undefined when unset; any other word than "embedding" is refused */
  task: string | undefined;
  dimensions: number;
  engine: string | undefined;
  pullPolicy: string | undefined;
  trustPolicy: string | undefined;
  acknowledgeRemoteCodeRisk: boolean;
  credentialAlias: string;
  include: string[];
  exclude: string[];
  pinned: boolean;
}

export interface ModelSpec {
  name: string;
  source: string;
  revision: string;
  task: Task;
  dimensions: number;
  engine: Engine;
  pullPolicy: PullPolicy;
  trustPolicy: TrustPolicy;
  acknowledgeRemoteCodeRisk: boolean;
  /** "" when none */
  credentialAlias: string;
  /** globs of the files to pull; empty means every file */
  include: string[];
  /** globs of the files never to pull */
  exclude: string[];
  /** never evicted to make room (records written before pins existed have none: not pinned) */
  pinned: boolean;
}

export interface InstallRecord {
  cacheDir: string;
  installedAtMs: number;
  sizeBytes: number;
  /** the hub commit installed; "" for a local directory */
  resolvedCommit: string;
}

export interface ModelRecord extends ModelSpec {
  provider: "local";
  status: ModelStatus;
  createdAtMs: number;
  updatedAtMs: number;
  /** present while installed (or installed but unhealthy) */
  install?: InstallRecord;
  /** set, durably, when UnregisterModel commits: a restart finishes what a crash interrupted */
  unregistering?: true;
  /** "models-file" while the server's models file lists the model; absent when it was registered by RPC */
  managedBy?: ManagedBy;
  /** the last completed Pull or ResolveModel; absent for an install made before uses were recorded */
  lastUsedAtMs?: number;
  /** stored content of this install that the background verification found corrupt */
  corrupt?: CorruptFile;
  /**
   * The local directory the last completed pull installed from (absent when
   * it came from the model's hub or S3 source): ResolveModel and auto-repair
   * pull from there again, never from the model's source. Kept when the
   * install goes (eviction, DropCache), replaced by the next completed pull.
   */
  sourceDir?: string;
}

/** A file of an install whose content no longer hashes to its manifest's sha256. */
export interface CorruptFile {
  path: string;
  sha256: string;
  /** the install it was found in: a later pull's install is not affected */
  installedAtMs: number;
}

/** When the model was last used: recorded, else (an install made before uses were recorded) when it was installed. */
export function lastUsedAtMs(record: ModelRecord): number | undefined {
  return record.lastUsedAtMs ?? record.install?.installedAtMs;
}

/** Who owns a model's spec besides RPC callers. */
export type ManagedBy = "models-file";
