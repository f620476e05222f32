// Links stored content into an install being staged. Called holding the
// blob's lock, right after verifyContent or commitContent, so a collection
// cannot remove the blob in between. The link changes the blob's ctime: the
// signature it leaves is recorded, so the next reuse need not hash it again.
import { link } from "node:fs/promises";
import { filesystemError } from "../errors.js";
import { type ContentStore, signatureOf, statBlob } from "./content-store.js";

export async function linkContent(store: ContentStore, sha256: string, target: string): Promise<void> {
  const path = store.blobPath(sha256);
  await link(path, target).catch((err: unknown) => {
    throw filesystemError("link stored content into", target, err);
  });
  await recordSignature(store, sha256);
}

/** Records the signature the store's own operation on a blob left. */
export async function recordSignature(store: ContentStore, sha256: string): Promise<void> {
  const stats = await statBlob(store.blobPath(sha256));
  const known = await store.known.get(sha256);
  if (!stats || !known) return;
  await store.known.put(sha256, { ...known, signature: signatureOf(stats) });
}
