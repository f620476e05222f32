// DescribeCache: the cache as a whole, derived from the disk: what the
// installs hold as if nothing were shared (logical), what the cache root
// holds (each stored content once, the manifests, resumable downloads), what
// PruneCache would free, the filesystem's free and total space, and every
// installed model, least recently used first (an install made before uses
// were recorded was last used when it was installed).
import { lstat, statfs } from "node:fs/promises";
import { join } from "node:path";
import { exclusiveBytes, footprintBytes, freeableBytes } from "../cache/footprint.js";
import { MANIFEST_FILE } from "../cache/layout.js";
import { filesystemError } from "../errors.js";
import type { Runtime } from "../runtime.js";
import { pruneCache } from "./prune-cache.js";
import { listEntries } from "../cache/list-entries.js";
import { lastUsedAtMs } from "../registry/model-record.js";

export interface CachedModel {
  name: string;
  sizeBytes: number;
  exclusiveBytes: number;
  lastUsedAtMs: number;
  pinned: boolean;
}

export interface CacheDescription {
  cacheRoot: string;
  logicalBytes: number;
  storedBytes: number;
  filesystemFreeBytes: number;
  filesystemTotalBytes: number;
  reclaimableBytes: number;
  evictableBytes: number;
  models: CachedModel[];
}

export async function describeCache(runtime: Runtime): Promise<CacheDescription> {
  const { layout } = runtime;
  const { models, logicalBytes, storedBytes } = await cacheBytes(runtime);
  const fs = await statfs(layout.root).catch((err: unknown) => {
    throw filesystemError("read the free space of", layout.root, err);
  });
  const reclaimable = await pruneCache(runtime, true);
  return {
    cacheRoot: layout.root,
    logicalBytes,
    storedBytes,
    filesystemFreeBytes: fs.bavail * fs.bsize,
    filesystemTotalBytes: fs.blocks * fs.bsize,
    reclaimableBytes: reclaimable.freedBytes,
    // together, as eviction counts them: content only evictable installs share is freed once the last goes
    evictableBytes: freeableBytes(models.filter((m) => !m.pinned && runtime.leases.count(m.name) === 0 && !runtime.pulls.find(m.name)).map((m) => layout.modelDir(m.name))),
    models,
  };
}

/** The installed models, least recently used first; their files as if nothing were shared (logical); what the cache root holds (stored). */
export async function cacheBytes(runtime: Pick<Runtime, "layout" | "store" | "registry"> & Partial<Pick<Runtime, "uses">>): Promise<{ models: CachedModel[]; logicalBytes: number; storedBytes: number }> {
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
