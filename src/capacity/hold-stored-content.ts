// Which of a pull's files the content store already holds, found before the
// pull is admitted so that it reserves only what it adds. A file's content is
// known by its listed sha256 or git blob id, else (a directory's files are
// read only later) by the install it replaces holding a file of the same path
// and size. What is found stays held in the store until the pull ends, so no
// eviction or collection frees content the pull counted on.
import type { Manifest } from "../cache/manifest.js";
import type { SourceFile } from "../sources/artifact-source.js";
import { type ContentStore, SHA256, statBlob } from "../store/content-store.js";

export interface HeldContent {
  /** bytes of distinct content the store lacks; a file whose content is unknown counts whole */
  addBytes: number;
  /** the inodes of the stored content held: evicting an install frees none of them */
  inodes: Set<number>;
  /** lets the store release and collect the content again */
  release(): void;
}

export async function holdStoredContent(store: ContentStore, files: readonly SourceFile[], replaced: Manifest | undefined, signal: AbortSignal): Promise<HeldContent> {
  const replacedFiles = new Map(replaced?.files.map((f) => [f.path, f]) ?? []);
  const wanted = new Map<string, number>();
  let addBytes = 0;
  for (const file of files) {
    const same = replacedFiles.get(file.path);
    const sha256 = file.sha256 ?? (file.gitBlobId ? await store.blobIds.get(file.gitBlobId) : undefined) ?? (same?.sizeBytes === file.sizeBytes ? same.sha256 : undefined);
    if (sha256 !== undefined && SHA256.test(sha256)) wanted.set(sha256, file.sizeBytes);
    else addBytes += file.sizeBytes;
  }
  const release = store.hold(wanted.keys());
  try {
    const inodes = new Set<number>();
    for (const [sha256, sizeBytes] of wanted) {
      // under the blob's lock: a release that began before the hold has ended, one after it sees the hold
      const stats = await store.withBlob(sha256, signal, () => statBlob(store.blobPath(sha256)));
      if (stats?.isFile()) inodes.add(Number(stats.ino));
      else addBytes += sizeBytes;
    }
    return { addBytes, inodes, release };
  } catch (err) {
    release();
    throw err;
  }
}
