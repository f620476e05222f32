// Keeps a model's record in step with its install: stamped when a pull
// promotes one, cleared when the install is dropped.
import { notRegistered } from "./get-model.js";
import type { InstallRecord, ModelRecord } from "./model-record.js";
import type { Registry } from "./open-registry.js";

export function recordInstall(registry: Registry, name: string, install: InstallRecord): Promise<ModelRecord> {
  return rewrite(registry, name, (record) => ({ ...record, status: "installed", install }));
}

/** The install on disk is not healthy: keep where it is, stop vouching for it. */
export function recordUnhealthyInstall(registry: Registry, name: string, cacheDir: string): Promise<ModelRecord> {
  return rewrite(registry, name, (record) => ({
    ...record,
    status: "unhealthy",
    install: { cacheDir, installedAtMs: record.install?.installedAtMs ?? 0, sizeBytes: record.install?.sizeBytes ?? 0, resolvedCommit: record.install?.resolvedCommit ?? "" },
  }));
}

export function recordNoInstall(registry: Registry, name: string): Promise<ModelRecord> {
  return rewrite(registry, name, ({ install: _dropped, ...record }) => ({ ...record, status: "registered" }));
}

function rewrite(registry: Registry, name: string, change: (record: ModelRecord) => ModelRecord): Promise<ModelRecord> {
  return registry.records.run(name, undefined, async () => {
    const current = await registry.models.get(name);
    if (current === undefined) throw notRegistered(name);
    const next = { ...change(current), updatedAtMs: Math.max(Date.now(), current.updatedAtMs + 1) };
    await registry.models.put(name, next);
    return next;
  });
}
