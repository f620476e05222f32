// Commits content into the store and links it at `target`: a complete,
// hashed and synced file (an ingest file a copy wrote, or a finished
// download) is linked at the target first, then renamed to its sha256,
// read-only, and the store's directory synced: from its first moment in the
// store it has a reference, so no collection (of any process sharing the
// cache root) can take it before the install holds it. When the store holds
// that content intact already, the target links the stored blob and the new
// file is dropped, so every install keeps sharing the one blob; `force` (a
// forced pull) hashes the stored copy again first, and one that fails is
// condemned and replaced by the new file; content only the replaced install
// held is replaced by the new file unread. Called holding the blob's lock.
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

/**
 * Returns the signature of the stored blob as committed (what linking it
 * vouched for). `replace` (a forced pull, for content no install but the one
 * it replaces holds) puts the new file in the stored copy's place without
 * reading that copy: the new file was hashed as it arrived.
 */
export async function commitContent(store: ContentStore, content: Ingested, hasher: Hasher, signal: AbortSignal, target: string, force = false, replace = false): Promise<string> {
  const blob = store.blobPath(content.sha256);
  const replaced = replace ? await statBlob(blob) : undefined;
  const checked = replace ? undefined : await verifyContent(store, content.sha256, hasher, signal, force);
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
    // a replaced copy was counted already: the store holds one blob of this content still
    if (!replaced) store.countSize(content.sizeBytes, 1);
    const stats = await statBlob(blob);
    // what the store knew of a replaced copy (its git blob id) still holds for the content
    const earlier = replaced ? await store.known.get(content.sha256) : undefined;
    await store.known.put(content.sha256, { ...earlier, sizeBytes: content.sizeBytes, hashedAtMs: Date.now(), signature: stats ? signatureOf(stats) : "" });
  }
  if (content.gitBlobId) {
    const known = await store.known.get(content.sha256);
    if (known) await store.known.put(content.sha256, { ...known, gitBlobId: content.gitBlobId });
    await store.blobIds.put(content.gitBlobId, content.sha256);
  }
  return (await store.known.get(content.sha256))?.signature ?? "";
}
