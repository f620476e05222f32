// Keeps a model's record in step with its install: stamped when a pull
// promotes one, cleared when the install is dropped, and corrected when an
// inspection finds the disk saying otherwise.
import { notRegistered } from "./get-model.js";
import type { CorruptFile, InstallRecord, ModelRecord } from "./model-record.js";
import type { Registry } from "./open-registry.js";

/**
 * A completed pull: the install is the model's, and the pull is a use of it;
 * `sourceDir` when it came from a local directory. It is UNHEALTHY from the
 * start when content it links was condemned while the pull ran (`corrupt`,
 * or a note recorded for this very install while it was being promoted); a
 * note about an earlier install goes.
 */
export function recordInstall(registry: Registry, name: string, install: InstallRecord, sourceDir?: string, corrupt?: CorruptFile): Promise<ModelRecord> {
  return rewrite(registry, name, ({ corrupt: noted, sourceDir: _earlier, ...record }) => {
    const found = corrupt ?? (noted?.installedAtMs === install.installedAtMs ? noted : undefined);
    return { ...record, status: found ? "unhealthy" : "installed", install, lastUsedAtMs: Date.now(), ...(sourceDir !== undefined ? { sourceDir } : {}), ...(found ? { corrupt: found } : {}) };
  });
}

/** The install on disk is not healthy: keep where it is, stop vouching for it. */
function unhealthy(record: ModelRecord, cacheDir: string): ModelRecord {
  return {
    ...record,
    status: "unhealthy",
    install: { cacheDir, installedAtMs: record.install?.installedAtMs ?? 0, sizeBytes: record.install?.sizeBytes ?? 0, resolvedCommit: record.install?.resolvedCommit ?? "" },
  };
}

export function recordNoInstall(registry: Registry, name: string): Promise<ModelRecord> {
  return rewrite(registry, name, ({ install: _dropped, corrupt: _gone, ...record }) => ({ ...record, status: "registered" }));
}

/** Whether `record` holds a corruption note for the install that was found at `installedAtMs`. */
export function corruptInstall(record: ModelRecord, installedAtMs: number | undefined): boolean {
  return record.corrupt !== undefined && record.corrupt.installedAtMs === installedAtMs;
}

/**
 * The install holds content found corrupt: unhealthy until a pull replaces
 * it. An install newer than the record's (promoted by a pull that has not
 * recorded it yet) gets the note, which that pull's record keeps. False when
 * the install is older than the record's: replaced already.
 */
export async function recordCorrupt(registry: Registry, name: string, corrupt: CorruptFile): Promise<boolean> {
  let marked = false;
  await rewrite(registry, name, (record) => {
    const current = record.install?.installedAtMs;
    if (current !== undefined && current > corrupt.installedAtMs) return record;
    marked = true;
    return current === corrupt.installedAtMs ? { ...record, status: "unhealthy", corrupt } : { ...record, corrupt };
  });
  return marked;
}

/** What an inspection of the disk found for a model's install. */
export type DiskFinding = { status: "missing" } | { status: "unhealthy"; cacheDir: string } | { status: "installed"; install: InstallRecord };

/** Whether `record` already says what the disk shows. */
export function agrees(record: ModelRecord, finding: DiskFinding): boolean {
  switch (finding.status) {
    case "missing":
      return record.status === "registered";
    case "unhealthy":
      return record.status === "unhealthy";
    case "installed":
      // an install with content found corrupt stays unhealthy while a shallow look finds it whole
      if (corruptInstall(record, finding.install.installedAtMs)) return record.status === "unhealthy";
      return record.status === "installed" && record.install?.installedAtMs === finding.install.installedAtMs;
  }
}

/**
 * Records what the disk shows, unless the record changed after `seen` was
 * read: a pull or a drop that recorded meanwhile knows better than an
 * inspection that began before it. Resolves with the new record, or
 * undefined when nothing was written.
 */
export function recordFinding(registry: Registry, seen: ModelRecord, finding: DiskFinding): Promise<ModelRecord | undefined> {
  if (agrees(seen, finding)) return Promise.resolve(undefined);
  const change = (record: ModelRecord): ModelRecord => {
    if (finding.status === "installed") return { ...record, status: corruptInstall(record, finding.install.installedAtMs) ? "unhealthy" : "installed", install: finding.install };
    if (finding.status === "unhealthy") return unhealthy(record, finding.cacheDir);
    const { install: _dropped, ...rest } = record;
    return { ...rest, status: "registered" };
  };
  return rewrite(registry, seen.name, change, seen.updatedAtMs);
}

function rewrite(registry: Registry, name: string, change: (record: ModelRecord) => ModelRecord): Promise<ModelRecord>;
function rewrite(registry: Registry, name: string, change: (record: ModelRecord) => ModelRecord, onlyAt: number): Promise<ModelRecord | undefined>;
function rewrite(registry: Registry, name: string, change: (record: ModelRecord) => ModelRecord, onlyAt?: number): Promise<ModelRecord | undefined> {
  return registry.records.run(name, undefined, async () => {
    const current = await registry.models.get(name);
    if (current === undefined) throw notRegistered(name);
    if (onlyAt !== undefined && current.updatedAtMs !== onlyAt) return undefined;
    const next = { ...change(current), updatedAtMs: Math.max(Date.now(), current.updatedAtMs + 1) };
    await registry.models.put(name, next);
    return next;
  });
}
