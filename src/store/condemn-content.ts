// Condemns stored content found corrupt, whoever found it (a pull's check
// before it links or commits, adoption, the background verification, a deep
// InspectCache): the one step for every detector. The store forgets it and
// remembers its inode (a pull that staged a link to it before it was found
// checks its install against that), its listeners mark every install that
// holds it UNHEALTHY and repair them, and its name moves into
// .blobs/quarantine/, so nothing links it again while the installs that hold
// it keep their files. Called holding the blob's lock.
import type { BigIntStats } from "node:fs";
import { mkdir, rename, unlink } from "node:fs/promises";
import { join } from "node:path";
import { syncDirectory } from "../fs/durable.js";
import { errorCode, filesystemError } from "../errors.js";
import { type Condemned, type ContentStore, statBlob } from "./content-store.js";

/** `found`: the stat of the inode that failed its hash. */
export async function condemnContent(store: ContentStore, sha256: string, found: BigIntStats): Promise<Condemned> {
  // remembered before anything else: a pull that checks its staged links from here on sees it
  store.markCondemned(sha256, found.ino);
  const path = store.blobPath(sha256);
  const current = await statBlob(path);
  const inPlace = current?.ino === found.ino;
  const condemned: Condemned = { sha256, ino: found.ino, sizeBytes: Number(found.size), quarantined: inPlace ? join(store.quarantineDir, `${sha256}.${found.ino}`) : undefined };
  // forgotten, then the installs marked, before the content leaves the store's name: a crash in between
  // leaves it where the next check hashes it again (the store knows nothing of it), never a copy nobody marked
  if (inPlace) await store.forget(sha256);
  for (const listener of store.condemnListeners) await listener(condemned);
  if (condemned.quarantined) {
    const quarantined = condemned.quarantined;
    const moved = await mkdir(store.quarantineDir, { recursive: true }).then(() => rename(path, quarantined)).then(
      () => true,
      async (err: unknown) => {
        // gone already: another server sharing the cache root condemned or collected it first
        if (errorCode(err) === "ENOENT") return false;
        // it must leave the store's name whatever happens, or the next pull condemns it again (and
        // its repair again, without end): the installs that hold it keep its bytes
        await unlink(path).catch((unlinkErr: unknown) => {
          if (errorCode(unlinkErr) !== "ENOENT") throw filesystemError("remove corrupt content (which could not be quarantined) at", path, unlinkErr);
        });
        return false;
      },
    );
    if (!moved) condemned.quarantined = undefined;
    await syncDirectory(store.blobsDir);
    if (moved) await syncDirectory(store.quarantineDir);
    store.countSize(condemned.sizeBytes, -1);
  }
  return condemned;
}

/**
 * The first of an install's files that is an inode condemned while this
 * process ran: a pull that staged a link to content before it was found
 * corrupt checks its promoted install with this.
 */
export async function condemnedFileIn(store: ContentStore, dir: string, files: readonly { path: string; sha256: string }[]): Promise<{ path: string; sha256: string } | undefined> {
  if (!store.anyCondemned) return undefined;
  for (const file of files) {
    const held = await statBlob(join(dir, file.path));
    if (held && store.isCondemned(file.sha256, held.ino)) return { path: file.path, sha256: file.sha256 };
  }
  return undefined;
}
