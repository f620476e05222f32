// Whether stored content may be linked into an install: only while known
// intact. Its lstat signature equal to the one the store recorded after its
// own last operation means nothing has touched it since it was last hashed;
// anything else (a write, a link the store did not make, a lost record)
// means it is hashed again now. Content that fails is removed, so the caller
// fetches or copies it again; it is never linked.
import { rm, unlink } from "node:fs/promises";
import { errorCode, filesystemError } from "../errors.js";
import { type ContentStore, signatureOf, statBlob } from "./content-store.js";

export type Hasher = (path: string, signal: AbortSignal) => Promise<string>;

/** Called holding the blob's lock. `force` hashes it whatever its signature says. */
export async function verifyContent(store: ContentStore, sha256: string, hasher: Hasher, signal: AbortSignal, force = false): Promise<boolean> {
  const path = store.blobPath(sha256);
  const before = await statBlob(path);
  if (!before) return false;
  if (!before.isFile()) {
    // never followed nor read: a link or a directory in the store's place is removed like corrupt content
    // (rm removes a link itself, never what it points at)
    await rm(path, { recursive: true, force: true });
    await forget(store, sha256);
    return false;
  }
  const known = await store.known.get(sha256);
  const signature = signatureOf(before);
  if (!force && known?.signature === signature) return true;
  let actual: string;
  try {
    actual = await hasher(path, signal);
  } catch (err) {
    // collected meanwhile by a server sharing the cache root: nothing is left to trust, and the caller fetches it again
    if (!signal.aborted && (await statBlob(path)) === undefined) return false;
    throw err;
  }
  if (actual !== sha256) {
    await removeBlob(store, sha256, Number(before.size));
    return false;
  }
  // the signature from before the hash: a change while it was read makes the next use hash again
  await store.known.put(sha256, { ...known, sizeBytes: Number(before.size), hashedAtMs: Date.now(), signature });
  return true;
}

/** Removes a blob and what the store knew of it; its size leaves the size index when given. */
export async function removeBlob(store: ContentStore, sha256: string, sizeBytes: number | undefined): Promise<void> {
  const path = store.blobPath(sha256);
  try {
    await unlink(path);
  } catch (err) {
    // already gone: nothing to remove
    if (errorCode(err) !== "ENOENT") throw filesystemError("remove", path, err);
  }
  if (sizeBytes !== undefined) store.countSize(sizeBytes, -1);
  await forget(store, sha256);
}

/** Drops what the store knew of a blob. */
export async function forget(store: ContentStore, sha256: string): Promise<void> {
  const known = await store.known.get(sha256);
  if (known?.gitBlobId) await store.blobIds.del(known.gitBlobId);
  await store.known.del(sha256);
}
