// PruneCache: removes what the cache holds but no model needs, in the order
// that frees the most: staging dirs no pull is writing (a crash's leftovers;
// their links would keep content referenced), ingest files no copy is
// writing (of this process, or of a live server sharing the cache root),
// resumable downloads of names the registry no longer knows, then every blob
// no install references. A model's leftovers are touched only
// under its lock, so nothing a running pull holds is removed. With `dryRun`
// nothing is removed and the blobs that would go are reported.
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { footprintBytes } from "../cache/footprint.js";
import { parkedEntry } from "../cache/park-install.js";
import { isValidName } from "../registry/names.js";
import type { Runtime } from "../runtime.js";
import { collectGarbage } from "../store/collect-garbage.js";
import { clearIngest } from "../store/ingest-areas.js";
import { listEntries } from "../cache/list-entries.js";

export interface Pruned {
  freedBytes: number;
  blobsRemoved: number;
  partialsRemoved: number;
  dryRun: boolean;
  /** names under the store that are not content: left alone */
  strays: string[];
}

export async function pruneCache(runtime: Runtime, dryRun: boolean): Promise<Pruned> {
  const { layout, store } = runtime;
  let freedBytes = 0;
  let partialsRemoved = 0;
  if (!dryRun) {
    for (const entry of await listEntries(layout.staging)) {
      const name = parkedEntry(entry).name;
      await underLock(runtime, name, () => rm(join(layout.staging, entry), { recursive: true, force: true }));
    }
    // what another live server sharing the cache root is writing is left alone
    freedBytes += await clearIngest(store);
  }
  const registered = new Set(await runtime.registry.models.keys().all());
  for (const name of await listEntries(layout.partial)) {
    if (!isValidName(name) || registered.has(name)) continue;
    const dir = layout.partialDir(name);
    await underLock(runtime, name, async () => {
      freedBytes += footprintBytes(dir);
      partialsRemoved += 1;
      if (!dryRun) await rm(dir, { recursive: true, force: true });
    });
  }
  const garbage = await collectGarbage(store, dryRun);
  return { freedBytes: freedBytes + garbage.freedBytes, blobsRemoved: garbage.removed, partialsRemoved, dryRun, strays: garbage.strays };
}

/** Runs `work` holding the model's lock when nobody else holds it; skips it when a pull or drop does. */
async function underLock(runtime: Runtime, name: string, work: () => Promise<unknown>): Promise<void> {
  const release = isValidName(name) ? await runtime.locks.tryAcquire(name) : async () => undefined;
  if (!release) return;
  try {
    await work();
  } finally {
    await release();
  }
}
