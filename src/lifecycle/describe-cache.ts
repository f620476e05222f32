// DescribeCache: the cache as a whole, derived from the disk: what the
// installs hold as if nothing were shared (logical), what the cache root
// holds (each stored content once, the manifests, resumable downloads), what
// PruneCache would free, the filesystem's free and total space, and every
// installed model, least recently used first (an install made before uses
// were recorded was last used when it was installed).
import { statfs } from "node:fs/promises";
import { type CachedModel, cacheBytes } from "../cache/cache-bytes.js";
import { freeableBytes } from "../cache/footprint.js";
import { filesystemError } from "../errors.js";
import type { Runtime } from "../runtime.js";
import { pruneCache } from "../maintenance/prune-cache.js";

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
