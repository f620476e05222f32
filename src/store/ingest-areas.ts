// The ingest areas of the servers sharing a cache root: each writes new
// content under .blobs/ingest/<id>/ and holds the area's cross-process lock
// (the store's `areaLocks`) from its store's open to its close. An area whose lock can be taken is
// a dead process's: content it had moved aside to collect, still linked by
// an install, gets its store name back, and the rest goes.
import type { BigIntStats } from "node:fs";
import { lstat, readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { errorCode, filesystemError } from "../errors.js";
import { COLLECTING, restoreAside } from "./collect-garbage.js";
import type { ContentStore } from "./content-store.js";
import { PROBE_PREFIX } from "./probe-hard-links.js";

const ASIDE = new RegExp(`^${COLLECTING}([0-9a-f]{64})\\.`);

/**
 * Removes this process's ingest files no copy of its own is writing, the
 * files an earlier version left directly in the ingest dir, and the areas of
 * processes gone; a live server's area is never touched. Returns the bytes freed.
 */
export async function clearIngest(store: ContentStore): Promise<number> {
  let freed = 0;
  for (const entry of await listEntries(store.ingestDir)) {
    const path = join(store.ingestDir, entry);
    if (entry === store.ingestId) {
      // a file being written keeps its companions too: a download's `<name>.segments.json` (and that file's `.tmp` while it is rewritten)
      freed += await clearArea(store, path, (file) => store.ingesting.has(file) || store.ingesting.has(file.replace(/\.segments\.json(\.tmp)?$/, "")));
      continue;
    }
    const stats = await statOrNone(path);
    if (!stats) continue;
    if (!stats.isDirectory()) {
      // the hard-link probe of a server starting at this moment: it removes its own
      if (entry.startsWith(PROBE_PREFIX) && Date.now() - Number(stats.mtimeMs) < 60_000) continue;
      // an earlier version wrote its ingest files here directly
      await rm(path, { force: true });
      freed += Number(stats.size);
      continue;
    }
    const release = await store.areaLocks(entry);
    // its server is alive: what is there is being written
    if (!release) continue;
    try {
      freed += await clearArea(store, path, () => false);
      await rm(path, { recursive: true, force: true });
    } finally {
      await release();
    }
  }
  return freed;
}

async function clearArea(store: ContentStore, dir: string, inUse: (path: string) => boolean): Promise<number> {
  let freed = 0;
  for (const entry of await listEntries(dir)) {
    const path = join(dir, entry);
    if (inUse(path)) continue;
    const stats = await statOrNone(path);
    if (!stats) continue;
    const aside = ASIDE.exec(entry);
    if (aside && stats.nlink > 1n) {
      // a collection stopped by a crash after an install linked the content: it stays stored
      if (await store.withBlob(aside[1]!, undefined, () => restoreAside(store, aside[1]!, path))) store.countSize(Number(stats.size), 1);
      continue;
    }
    await rm(path, { recursive: true, force: true });
    freed += Number(stats.size);
  }
  return freed;
}

async function statOrNone(path: string): Promise<BigIntStats | undefined> {
  try {
    return await lstat(path, { bigint: true });
  } catch (err) {
    // removed since it was listed
    if (errorCode(err) === "ENOENT") return undefined;
    throw filesystemError("read", path, err);
  }
}

/** The entries of `dir`, none when it does not exist. */
async function listEntries(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (err) {
    // never created: nothing is there
    if (errorCode(err) === "ENOENT") return [];
    throw filesystemError("list", dir, err);
  }
}
