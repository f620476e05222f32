// Commits content into the store and links it at `target`: a complete,
// hashed and synced file (an ingest file a copy wrote, or a finished
// download) is linked at the target first, then renamed to its sha256,
// read-only, and the store's directory synced: from its first moment in the
// store it has a reference, so no collection (of any process sharing the
// cache root) can take it before the install holds it. When the store holds
// that content intact already, the target links the stored blob and the new
// file is dropped, so every install keeps sharing the one blob; `force` (a
// forced pull) hashes the stored copy again first, and one that fails is
// condemned and replaced by the new file. Called holding the blob's lock.
import { chmod, link, rename, rm } from "node:fs/promises";
import { filesystemError } from "../errors.js";
import { syncDirectory } from "../fs/durable.js";
import { type ContentStore, signatureOf, statBlob } from "./content-store.js";
import { linkContent } from "./link-content.js";
import { type Hasher, verifyContent } from "./verify-content.js";

export interface Ingested {
  /** the synced file holding the content */
  path: string;
  sha256: string;
  sizeBytes: number;
  /** the git blob id the content was checked against, if any */
  gitBlobId?: string;
}

/** Returns the signature of the stored blob as committed (what linking it vouched for). */
export async function commitContent(store: ContentStore, content: Ingested, hasher: Hasher, signal: AbortSignal, target: string, force = false): Promise<string> {
  const blob = store.blobPath(content.sha256);
  const checked = await verifyContent(store, content.sha256, hasher, signal, force);
  // linking the stored copy fails when it changed or another process collected it since the check: ours goes in instead
  if (checked !== undefined && (await linkContent(store, content.sha256, target, checked))) {
    await rm(content.path, { force: true });
  } else {
    // the mode belongs to the inode: every install's link is read-only too
    await chmod(content.path, 0o444);
    await link(content.path, target).catch((err: unknown) => {
      throw filesystemError("link new content into", target, err);
    });
    await rename(content.path, blob).catch((err: unknown) => {
      throw filesystemError("move content into the store at", blob, err);
    });
    await syncDirectory(store.blobsDir);
    store.countSize(content.sizeBytes, 1);
    const stats = await statBlob(blob);
    await store.known.put(content.sha256, { sizeBytes: content.sizeBytes, hashedAtMs: Date.now(), signature: stats ? signatureOf(stats) : "" });
  }
  if (content.gitBlobId) {
    const known = await store.known.get(content.sha256);
    if (known) await store.known.put(content.sha256, { ...known, gitBlobId: content.gitBlobId });
    await store.blobIds.put(content.gitBlobId, content.sha256);
  }
  return (await store.known.get(content.sha256))?.signature ?? "";
}
