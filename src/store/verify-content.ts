// Whether stored content may be linked into an install: only while known
// intact. This file is the one owner of that trust. A blob's lstat signature
// equal to the one the store recorded after its own last operation means
// nothing has touched it since it was last hashed; anything else (a write, a
// link the store did not make, a lost record) means it is hashed again now.
// A signature is renewed only by a step of the store that found the old one
// still matching just before it ran: a change made behind the store's back is
// never taken for the store's own.
import { rm, unlink } from "node:fs/promises";
import { errorCode, filesystemError } from "../errors.js";
import { condemnContent } from "./condemn-content.js";
import { type ContentStore, signatureOf, statBlob } from "./content-store.js";

export type Hasher = (path: string, signal: AbortSignal) => Promise<string>;

/**
 * Called holding the blob's lock. The signature it vouches for (the blob's
 * state it found intact), or undefined when the store does not hold the
 * content intact: content that fails is condemned, so the caller fetches or
 * copies it again and never links it. `force` hashes it whatever its
 * signature says.
 */
export async function verifyContent(store: ContentStore, sha256: string, hasher: Hasher, signal: AbortSignal, force = false): Promise<string | undefined> {
  const path = store.blobPath(sha256);
  const before = await statBlob(path);
  if (!before) return undefined;
  if (!before.isFile()) {
    // never followed nor read: a link or a directory in the store's place is removed like corrupt content
    // (rm removes a link itself, never what it points at)
    await rm(path, { recursive: true, force: true });
    await store.forget(sha256);
    return undefined;
  }
  const known = await store.known.get(sha256);
  const signature = signatureOf(before);
  if (!force && known?.signature === signature) return signature;
  let actual: string;
  try {
    actual = await hasher(path, signal);
  } catch (err) {
    // collected meanwhile by a server sharing the cache root: nothing is left to trust, and the caller fetches it again
    if (!signal.aborted && (await statBlob(path)) === undefined) return undefined;
    throw err;
  }
  if (actual !== sha256) {
    await condemnContent(store, sha256, before);
    return undefined;
  }
  // the signature from before the hash: a change while it was read makes the next use hash again
  await store.known.put(sha256, { ...known, sizeBytes: Number(before.size), hashedAtMs: Date.now(), signature });
  return signature;
}

/**
 * Runs one of the store's own steps on a blob (a link into an install, the
 * unlink of an install's name for it), holding its lock. Links and unlinks
 * change the blob's ctime: the signature the step leaves is recorded only
 * when the blob was, just before the step, as `expected` (by default the
 * recorded signature) says. Otherwise the record is cleared, and the next
 * use hashes the blob again. Whether the signature was renewed.
 */
export async function renewSignature(store: ContentStore, sha256: string, step: () => Promise<void>, expected?: string): Promise<boolean> {
  const path = store.blobPath(sha256);
  const before = await statBlob(path);
  const known = await store.known.get(sha256);
  const vouched = expected ?? known?.signature;
  const matched = before !== undefined && vouched && known?.signature === vouched && signatureOf(before) === vouched;
  await step();
  if (!known) return false;
  const seen = matched ? await statBlob(path) : undefined;
  // only the step's own change: the same inode, size and mtime, one link more or fewer; anything
  // else (a write through another install's link meanwhile, another server's new file) is not vouched for
  const after = seen && before && seen.ino === before.ino && seen.size === before.size && seen.mtimeNs === before.mtimeNs && (seen.nlink - before.nlink === 1n || before.nlink - seen.nlink === 1n) ? seen : undefined;
  await store.known.put(sha256, { ...known, signature: after ? signatureOf(after) : "" });
  return after !== undefined;
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
  await store.forget(sha256);
}
