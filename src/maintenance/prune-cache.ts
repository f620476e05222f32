// PruneCache: removes what the cache holds but no model needs, in the order
// that frees the most: staging dirs no pull is writing (a crash's leftovers;
// their links would keep content referenced), ingest files no copy is
// writing (of this process, or of a live server sharing the cache root),
// resumable downloads no model needs (of names the registry no longer knows,
// and of commits a known model has moved past; of the commits kept, what an
// OCI pull unpacked and did not install), then every blob no install
// references. A model's leftovers are touched only under its lock, taken
// without waiting: what is busy (a running pull, a drop) is skipped and
// reported, never waited for. With `dryRun` nothing is removed and what would
// go is reported.
import { lstat, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { footprintBytes } from "../cache/footprint.js";
import { UNPACKED_DIR } from "../cache/layout.js";
import { parkedEntry } from "../cache/park-install.js";
import { isValidName } from "../registry/names.js";
import type { ModelRecord } from "../registry/model-record.js";
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
  /** models whose leftovers were not looked at: another operation held their lock */
  skipped: string[];
}

const COMMIT = /^[0-9a-f]{40}$/;

export async function pruneCache(runtime: Runtime, dryRun: boolean): Promise<Pruned> {
  const { layout, store } = runtime;
  let freedBytes = 0;
  let partialsRemoved = 0;
  const skipped = new Set<string>();
  if (!dryRun) {
    for (const entry of await listEntries(layout.staging)) {
      const name = parkedEntry(entry).name;
      if (!(await underLock(runtime, name, () => rm(join(layout.staging, entry), { recursive: true, force: true })))) skipped.add(name);
    }
    // what another live server sharing the cache root is writing is left alone
    freedBytes += await clearIngest(store);
  }
  const registered = new Map<string, ModelRecord>();
  for (const record of await runtime.registry.models.values().all()) registered.set(record.name, record);
  for (const name of await listEntries(layout.partial)) {
    if (!isValidName(name)) continue;
    const record = registered.get(name);
    const done = await underLock(runtime, name, async () => {
      const dirs = record ? await unneededCommits(runtime, record) : [layout.partialDir(name)];
      for (const dir of dirs) {
        freedBytes += footprintBytes(dir);
        partialsRemoved += 1;
        if (!dryRun) await rm(dir, { recursive: true, force: true });
      }
      // in the commits kept: entries an OCI pull unpacked and did not install (a crash), derived from the blobs kept beside them
      for (const commit of record ? await listEntries(layout.partialDir(name)) : []) {
        const unpacked = join(layout.partialDir(name), commit, UNPACKED_DIR);
        // absent: no OCI pull left one there, or the entry is a file of a layout without commits
        if (dirs.includes(dirname(unpacked)) || !(await lstat(unpacked).catch(() => undefined))?.isDirectory()) continue;
        freedBytes += footprintBytes(unpacked);
        if (!dryRun) await rm(unpacked, { recursive: true, force: true });
      }
    });
    if (!done) skipped.add(name);
  }
  const garbage = await collectGarbage(store, dryRun);
  return { freedBytes: freedBytes + garbage.freedBytes, blobsRemoved: garbage.removed, partialsRemoved, dryRun, strays: garbage.strays, skipped: [...skipped].sort() };
}

/**
 * A known model's resumable downloads that no pull of it would resume: every
 * commit but the one its revision names (a 40-hex revision), else but the
 * latest download (the next pull of a branch most likely resolves where the
 * last one did), and never the commit already installed.
 */
async function unneededCommits(runtime: Runtime, record: ModelRecord): Promise<string[]> {
  const base = runtime.layout.partialDir(record.name);
  const commits: { dir: string; commit: string; mtimeMs: number }[] = [];
  for (const commit of await listEntries(base)) {
    const stats = await lstat(join(base, commit)).catch(() => undefined);
    // files directly under the model's dir come from a layout without commits: left for the next pull
    if (stats?.isDirectory()) commits.push({ dir: join(base, commit), commit, mtimeMs: stats.mtimeMs });
  }
  const installed = record.install?.resolvedCommit;
  let needed: string | undefined;
  if (COMMIT.test(record.revision)) needed = record.revision;
  else needed = commits.filter((c) => c.commit !== installed).sort((a, b) => b.mtimeMs - a.mtimeMs || (a.commit < b.commit ? 1 : -1))[0]?.commit;
  return commits.filter((c) => c.commit !== needed).map((c) => c.dir);
}

/** Runs `work` holding the model's lock when nobody else holds it; false (skipped) when a pull or drop does. */
async function underLock(runtime: Runtime, name: string, work: () => Promise<unknown>): Promise<boolean> {
  const release = isValidName(name) ? await runtime.locks.tryAcquire(name, undefined, { freesSpace: true }) : async () => undefined;
  if (!release) return false;
  try {
    await work();
  } finally {
    await release();
  }
  return true;
}
