// Commits content into the store: a complete, hashed and synced file (an
// ingest file a copy wrote, or a finished download) is renamed to its
// sha256, read-only, and the store's directory synced. When the store holds
// that content intact already, the new file is dropped instead, so every
// install keeps sharing the one blob; `force` (a forced pull) hashes the
// stored copy again first, and one that fails is condemned and replaced by
// the new file. Called holding the blob's lock.
import { chmod, rename, rm } from "node:fs/promises";
import { filesystemError } from "../errors.js";
import { syncDirectory } from "../cache/durable.js";
import { type ContentStore, signatureOf, statBlob } from "./content-store.js";
import { type Hasher, verifyContent } from "./verify-content.js";

export interface Ingested {
  /** the synced file holding the content */
  path: string;
  sha256: string;
  sizeBytes: number;
  /** the git blob id the content was checked against, if any */
  gitBlobId?: string;
}

/** The signature of the stored blob as committed, for linkContent. */
export async function commitContent(store: ContentStore, content: Ingested, hasher: Hasher, signal: AbortSignal, force = false): Promise<string> {
  const target = store.blobPath(content.sha256);
  let signature = await verifyContent(store, content.sha256, hasher, signal, force);
  if (signature !== undefined) {
    await rm(content.path, { force: true });
  } else {
    // the mode belongs to the inode: every install's link is read-only too
    await chmod(content.path, 0o444);
    await rename(content.path, target).catch((err: unknown) => {
      throw filesystemError("move content into the store at", target, err);
    });
    await syncDirectory(store.blobsDir);
    store.countSize(content.sizeBytes, 1);
    const stats = await statBlob(target);
    signature = stats ? signatureOf(stats) : "";
    await store.known.put(content.sha256, { sizeBytes: content.sizeBytes, hashedAtMs: Date.now(), signature });
  }
  if (content.gitBlobId) {
    const known = await store.known.get(content.sha256);
    if (known) await store.known.put(content.sha256, { ...known, gitBlobId: content.gitBlobId });
    await store.blobIds.put(content.gitBlobId, content.sha256);
  }
  return signature;
}
