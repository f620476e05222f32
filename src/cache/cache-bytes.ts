// What the installs and the cache root hold, in bytes, derived from the disk:
// each installed model (least recently used first), the logical total (as if
// nothing were shared) and the stored one (each content once). DescribeCache,
// capacity and the metrics read it.
import { lstat } from "node:fs/promises";
import { join } from "node:path";
import type { Registry } from "../registry/open-registry.js";
import { lastUsedAtMs } from "../registry/model-record.js";
import type { UseRecorder } from "../registry/use-recorder.js";
import type { ContentStore } from "../store/content-store.js";
import { exclusiveBytes, footprintBytes } from "./footprint.js";
import { MANIFEST_FILE, type CacheLayout } from "./layout.js";
import { listEntries } from "./list-entries.js";

export interface CachedModel {
  name: string;
  sizeBytes: number;
  exclusiveBytes: number;
  lastUsedAtMs: number;
  pinned: boolean;
}

export interface CacheBytesSources {
  layout: CacheLayout;
  store: ContentStore;
  registry: Registry;
  /** the uses recorded but not yet written */
  uses?: UseRecorder;
}

/** The installed models, least recently used first; their files as if nothing were shared (logical); what the cache root holds (stored). */
export async function cacheBytes(runtime: CacheBytesSources): Promise<{ models: CachedModel[]; logicalBytes: number; storedBytes: number }> {
  const { layout, store } = runtime;
  const models: CachedModel[] = [];
  let manifests = 0;
  for (const stored of await runtime.registry.models.values().all()) {
    const record = runtime.uses?.overlay(stored) ?? stored;
    if (!record.install) continue;
    const dir = layout.modelDir(record.name);
    const manifest = await lstat(join(dir, MANIFEST_FILE)).catch(() => undefined);
    if (!manifest) continue;
    manifests += manifest.size;
    models.push({ name: record.name, sizeBytes: footprintBytes(dir), exclusiveBytes: exclusiveBytes(dir), lastUsedAtMs: lastUsedAtMs(record) ?? 0, pinned: record.pinned ?? false });
  }
  models.sort((a, b) => a.lastUsedAtMs - b.lastUsedAtMs || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  let blobs = 0;
  for (const name of await listEntries(store.blobsDir)) {
    const stats = await lstat(join(store.blobsDir, name)).catch(() => undefined);
    if (stats?.isFile()) blobs += stats.size;
  }
  return { models, logicalBytes: models.reduce((sum, m) => sum + m.sizeBytes, 0), storedBytes: blobs + manifests + footprintBytes(layout.partial) };
}
