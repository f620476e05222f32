// Startup adoption of installs written before the content store: their
// files are plain files (one link each) beside a manifest.json. Each such
// file is hashed; when it matches its manifest it becomes the stored content
// itself (a hard link from the store's name to the install's file: no copy,
// and at every step the install holds the same bytes), or, when the store
// holds that content already, the install's name is pointed at the stored
// blob by an atomic rename. A file that does not match its manifest is left
// as it is, and its model is marked unhealthy, as a deep InspectCache would.
import { chmod, link, lstat, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { syncDirectory } from "../cache/durable.js";
import { manifestIn } from "../cache/install-artifacts.js";
import type { CacheLayout } from "../cache/layout.js";
import type { ModelLocks } from "../cache/model-lock.js";
import { ModelCacheError, filesystemError } from "../errors.js";
import { listModels } from "../registry/list-models.js";
import type { Registry } from "../registry/open-registry.js";
import { recordFinding } from "../registry/record-install.js";
import { type ContentStore, signatureOf, statBlob } from "./content-store.js";
import { linkContent } from "./link-content.js";
import { type Hasher, renewSignature, verifyContent } from "./verify-content.js";

export interface Adoption {
  /** models at least one of whose files moved into the store */
  adopted: string[];
  /** models with a file that does not match its manifest: left as they are, marked unhealthy */
  unhealthy: string[];
  /** models another process was working on: left for a later start */
  skipped: string[];
  /** models whose adoption failed, and why: left as they were for a later start */
  failed: { name: string; error: string }[];
}

export async function adoptInstalls(
  runtime: { registry: Registry; layout: CacheLayout; locks: ModelLocks; store: ContentStore },
  hasher: Hasher,
  signal: AbortSignal,
): Promise<Adoption> {
  const { registry, layout, locks, store } = runtime;
  const adoption: Adoption = { adopted: [], unhealthy: [], skipped: [], failed: [] };
  for (const model of await listModels(registry)) {
    if (model.status !== "installed" || !model.install) continue;
    const dir = layout.modelDir(model.name);
    const manifest = manifestIn(dir);
    if (!manifest) continue;
    const plain = [];
    for (const file of manifest.files) {
      const stats = await lstat(join(dir, file.path)).catch(() => undefined);
      if (stats?.isFile() && stats.nlink === 1) plain.push(file);
    }
    if (plain.length === 0) continue;
    const release = await locks.tryAcquire(model.name);
    if (!release) {
      adoption.skipped.push(model.name);
      continue;
    }
    try {
      let mismatch = false;
      for (const file of plain) {
        const path = join(dir, file.path);
        const hashed = await statBlob(path);
        if ((await hasher(path, signal)) !== file.sha256) {
          mismatch = true;
          continue;
        }
        await store.withBlob(file.sha256, signal, async () => {
          const now = await statBlob(path);
          if (!hashed || !now || signatureOf(now) !== signatureOf(hashed)) {
            throw new ModelCacheError("aborted", `'${path}' changed while it was hashed; the next start adopts it`);
          }
          const checked = await verifyContent(store, file.sha256, hasher, signal);
          if (checked !== undefined) {
            // the store has this content already: the install's name moves to it in one rename
            const temp = store.ingestPath();
            if (!(await linkContent(store, file.sha256, temp, checked))) {
              throw new ModelCacheError("aborted", `stored content ${file.sha256} changed while '${path}' was adopted; the next start adopts it`);
            }
            await renewSignature(store, file.sha256, () =>
              rename(temp, path).catch(async (err: unknown) => {
                await rm(temp, { force: true });
                throw filesystemError("point at the stored content", path, err);
              }),
            );
            return;
          }
          await chmod(path, 0o444);
          const blob = store.blobPath(file.sha256);
          await link(path, blob).catch((err: unknown) => {
            throw filesystemError("adopt into the store", path, err);
          });
          await syncDirectory(store.blobsDir);
          store.countSize(file.sizeBytes, 1);
          const stats = await statBlob(blob);
          await store.known.put(file.sha256, { sizeBytes: file.sizeBytes, hashedAtMs: Date.now(), signature: stats ? signatureOf(stats) : "" });
        });
      }
      if (mismatch) {
        adoption.unhealthy.push(model.name);
        await recordFinding(registry, model, { status: "unhealthy", cacheDir: dir });
      } else {
        adoption.adopted.push(model.name);
      }
    } catch (err) {
      // reported, not fatal: the install stays usable as it was, and the next start tries again
      if (signal.aborted) throw err;
      adoption.failed.push({ name: model.name, error: (err as Error).message });
    } finally {
      await release();
    }
  }
  return adoption;
}
