// Links stored content into an install being staged. Called holding the
// blob's lock, right after verifyContent, so no collection of this process
// removes the blob in between; another server sharing the cache root may
// collect it all the same, and then the link finds nothing and says so: the
// caller fetches or copies the content again. The link changes the blob's
// ctime: the signature it leaves is recorded, so the next reuse need not
// hash it again.
import { link } from "node:fs/promises";
import { errorCode, filesystemError } from "../errors.js";
import { type ContentStore, signatureOf, statBlob } from "./content-store.js";

/** Whether the content was linked: false when the store no longer holds it. */
export async function linkContent(store: ContentStore, sha256: string, target: string): Promise<boolean> {
  const path = store.blobPath(sha256);
  try {
    await link(path, target);
  } catch (err) {
    // gone since it was checked (collected by another process), unless what is missing is the target's dir
    if (errorCode(err) === "ENOENT" && (await statBlob(path)) === undefined) return false;
    throw filesystemError("link stored content into", target, err);
  }
  await recordSignature(store, sha256);
  return true;
}

/** Records the signature the store's own operation on a blob left. */
export async function recordSignature(store: ContentStore, sha256: string): Promise<void> {
  const stats = await statBlob(store.blobPath(sha256));
  const known = await store.known.get(sha256);
  if (!stats || !known) return;
  await store.known.put(sha256, { ...known, signature: signatureOf(stats) });
}
