// Adoption of installs written before the content store: their files are
// plain files (one link each) beside a manifest.json. It runs in the
// background once the server listens (an install not yet adopted is used as
// it is: its files hold the same bytes at every step), each model under its
// lock, waiting for it when a pull or drop holds it. Each such
// file is hashed; when it matches its manifest it becomes the stored content
// itself (a hard link from the store's name to the install's file: no copy,
// and at every step the install holds the same bytes), or, when the store
// holds that content already, the install's name is pointed at the stored
// blob by an atomic rename. A file that does not match its manifest is left
// as it is, and its model is marked unhealthy, as a deep InspectCache would.
import { chmod, link, lstat, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { syncDirectory } from "../fs/durable.js";
import { manifestIn } from "../cache/install-artifacts.js";
import type { ManifestFile } from "../cache/manifest.js";
import type { CacheLayout } from "../cache/layout.js";
import type { ModelLocks } from "../cache/model-lock.js";
import { ModelCacheError, filesystemError } from "../errors.js";
import { listModels } from "../registry/list-models.js";
import type { Registry } from "../registry/open-registry.js";
import { recordFinding } from "../registry/record-install.js";
import { type ContentStore, signatureOf, statBlob } from "../store/content-store.js";
import { linkContent } from "../store/link-content.js";
import { type Hasher, renewSignature, verifyContent } from "../store/verify-content.js";

export interface Adoption {
  /** models at least one of whose files moved into the store */
  adopted: string[];
  /** models with a file that does not match its manifest: left as they are, marked unhealthy */
  unhealthy: string[];
  /** models whose adoption failed, and why: left as they were for a later start */
  failed: { name: string; error: string }[];
}

type AdoptionRuntime = { registry: Registry; layout: CacheLayout; locks: ModelLocks; store: ContentStore };

/** Where adoption tells what it did (the server's logger). */
export interface AdoptionLog {
  info(fields: object, message: string): void;
  warn(fields: object, message: string): void;
  error(fields: object, message: string): void;
}

/** The models whose install still holds plain files: a stat per file, nothing read. */
export async function earlierInstalls(runtime: Pick<AdoptionRuntime, "registry" | "layout">): Promise<string[]> {
  const names = [];
  for (const model of await listModels(runtime.registry)) {
    if (model.status !== "installed" || !model.install) continue;
    if ((await plainFiles(runtime.layout.modelDir(model.name))).length > 0) names.push(model.name);
  }
  return names;
}

/** The files of the install in `dir` that are plain files, not yet links to stored content. */
async function plainFiles(dir: string): Promise<ManifestFile[]> {
  const manifest = manifestIn(dir);
  if (!manifest) return [];
  const plain = [];
  for (const file of manifest.files) {
    const stats = await lstat(join(dir, file.path)).catch(() => undefined);
    if (stats?.isFile() && stats.nlink === 1) plain.push(file);
  }
  return plain;
}

/**
 * Adopts `names` (from earlierInstalls) and logs the outcome. Never throws:
 * a failure is logged, the installs stay usable as they were, and the next
 * start tries again. Resolves once done or, after `signal` aborts, stopped.
 */
export async function adoptInBackground(runtime: AdoptionRuntime, names: readonly string[], hasher: Hasher, log: AdoptionLog, signal: AbortSignal): Promise<void> {
  log.info({ models: names.length }, "adopting installs of an earlier version into the content store; Health reports NOT_SERVING until it is done");
  try {
    const adoption = await adoptInstalls(runtime, names, hasher, signal);
    const trouble = adoption.unhealthy.length + adoption.failed.length > 0;
    log[trouble ? "warn" : "info"]({ ...adoption }, "moved installs of an earlier version into the content store");
  } catch (err) {
    if (signal.aborted) return;
    log.error({ err }, "adopting installs of an earlier version failed; they stay usable as they are, and the next start tries again");
  }
}

export async function adoptInstalls(runtime: AdoptionRuntime, names: readonly string[], hasher: Hasher, signal: AbortSignal): Promise<Adoption> {
  const { registry, layout, locks, store } = runtime;
  const adoption: Adoption = { adopted: [], unhealthy: [], failed: [] };
  for (const name of names) {
    // no hurry in the background: a pull or drop of the model goes first, and what it leaves is looked at afresh
    const release = await locks.acquire(name, signal, Number.POSITIVE_INFINITY);
    try {
      const model = await registry.models.get(name);
      if (model?.status !== "installed" || !model.install || model.unregistering) continue;
      const dir = layout.modelDir(name);
      const plain = await plainFiles(dir);
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
            // a PruneCache meanwhile leaves it alone
            store.ingesting.add(temp);
            try {
              if (await linkContent(store, file.sha256, temp, checked)) {
                await renewSignature(store, file.sha256, () =>
                  rename(temp, path).catch(async (err: unknown) => {
                    await rm(temp, { force: true });
                    throw filesystemError("point at the stored content", path, err);
                  }),
                );
                return;
              }
            } finally {
              store.ingesting.delete(temp);
            }
            // gone since the check (collected by a server sharing the cache root): this file becomes it
            if ((await statBlob(store.blobPath(file.sha256))) !== undefined) {
              throw new ModelCacheError("aborted", `stored content ${file.sha256} changed while '${path}' was adopted; the next start adopts it`);
            }
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
        adoption.unhealthy.push(name);
        await recordFinding(registry, model, { status: "unhealthy", cacheDir: dir });
      } else if (plain.length > 0) {
        adoption.adopted.push(name);
      }
    } catch (err) {
      // reported, not fatal: the install stays usable as it was, and the next start tries again
      if (signal.aborted) throw err;
      adoption.failed.push({ name, error: (err as Error).message });
    } finally {
      await release();
    }
  }
  return adoption;
}
