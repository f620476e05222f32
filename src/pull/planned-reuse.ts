// How many of a hub pull's bytes the store already holds, told in
// PullStarted before anything is fetched: the files whose listed sha256 or
// git blob id names stored content unchanged since the store last hashed it
// (a stat per file, nothing read). Content that must be hashed again first is
// not counted; the files' own `reused` say what happened.
import type { SourceFile } from "../sources/artifact-source.js";
import { type ContentStore, signatureOf, statBlob } from "../store/content-store.js";

export async function plannedReuse(store: ContentStore, files: readonly SourceFile[]): Promise<number> {
  let bytes = 0;
  for (const file of files) {
    const sha256 = file.sha256 ?? (file.gitBlobId ? await store.blobIds.get(file.gitBlobId) : undefined);
    if (sha256 === undefined) continue;
    const stats = await statBlob(store.blobPath(sha256));
    const known = stats?.isFile() ? await store.known.get(sha256) : undefined;
    if (stats && known?.signature === signatureOf(stats)) bytes += file.sizeBytes;
  }
  return bytes;
}
