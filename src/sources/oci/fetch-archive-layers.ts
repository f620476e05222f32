// An OCI source's archive layers (.tar, .tar+gzip) fetched and unpacked
// inside the pull, once it holds the model's lock and has said PullStarted:
// each blob downloaded (resumable, verified by digest) into the model's
// partial dir, reported as a transfer named by its digest, then unpacked
// beside it; the install's listing is the raw layers' files and the entries.
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { MANIFEST_FILE } from "../../cache/layout.js";
import { ModelCacheError, quote } from "../../errors.js";
import type { SourceFile, TransferObserver } from "../artifact-source.js";
import { filterFiles } from "../file-filters.js";
import { unpackLayer } from "./unpack-layer.js";

/** a file of the install: a raw layer (digest = its sha256), or an entry of an archive layer unpacked to `localPath` */
export type OciFile = SourceFile & { digest: string; localPath?: string };

export interface ArchiveLayer {
  /** its position in the manifest, for messages */
  index: number;
  digest: string;
  size: number;
  mediaType: string;
  /** the layer's path annotation: entries not already under it are put under it */
  prefix: string;
}

export interface FetchArchiveLayersOptions {
  archives: readonly ArchiveLayer[];
  /** the raw layers' files, unfiltered */
  files: readonly OciFile[];
  /** the source as messages name it */
  where: string;
  partialDir: string;
  include: string[];
  exclude: string[];
  limits?: { check(files: readonly SourceFile[]): void; maxTotalBytes: number };
  /** the index of the first archive's transfer in the pull's events (after the listed files) */
  firstIndex: number;
  /** the source's download of a blob (connections, ranges, rate cap) into `partialPath` */
  download(file: OciFile, partialPath: string, signal: AbortSignal, onBytes: (bytes: number) => void): Promise<unknown>;
  signal: AbortSignal;
  observer: TransferObserver;
}

/** An archive layer as the pull sees it before it is unpacked: a transfer named by its digest, of its blob's size (compressed for .tar+gzip). */
function archiveTransfer(archive: ArchiveLayer): OciFile {
  return { path: archive.digest, sizeBytes: archive.size, sha256: archive.digest.slice("sha256:".length), digest: archive.digest };
}

/** The install's listing: the raw layers' files and every archive's entries, filtered, checked against the pull's limits, sorted by path. */
export async function fetchArchiveLayers(options: FetchArchiveLayersOptions): Promise<SourceFile[]> {
  const { where, partialDir, signal, observer } = options;
  const unpacked = join(partialDir, ".unpacked");
  // what an earlier pull of this model unpacked and did not install (a failure, a crash): nobody else writes here while the lock is held
  await rm(unpacked, { recursive: true, force: true });
  const all: OciFile[] = [...options.files];
  let unpackedBytes = all.reduce((sum, file) => sum + file.sizeBytes, 0);
  for (const [k, archive] of options.archives.entries()) {
    const blob = archiveTransfer(archive);
    const hex = blob.sha256!;
    const what = `layer ${archive.index} of ${quote(where)} (${archive.digest})`;
    const blobPath = join(partialDir, ".layers", hex);
    observer.fileStarted(blob, options.firstIndex + k);
    await options.download(blob, blobPath, signal, (n) => observer.bytesWritten(blob, n));
    observer.fileCompleted(blob, hex, false);
    const budget = (options.limits?.maxTotalBytes ?? Number.MAX_SAFE_INTEGER) - unpackedBytes;
    for (const file of await unpackLayer(blobPath, archive.mediaType.endsWith("+gzip"), archive.prefix, join(unpacked, hex), what, budget, signal)) {
      unpackedBytes += file.sizeBytes;
      if (file.path === MANIFEST_FILE) throw new ModelCacheError("failed_precondition", `${what} holds ${quote(file.path)}, which the cache keeps for itself`);
      all.push({ path: file.path, sizeBytes: file.sizeBytes, sha256: file.sha256, digest: archive.digest, localPath: file.localPath });
    }
  }
  const names = new Set<string>();
  for (const file of all) {
    if (names.has(file.path)) throw new ModelCacheError("failed_precondition", `two layers of ${quote(where)} name the file ${quote(file.path)}`);
    names.add(file.path);
  }
  if (all.length === 0) throw new ModelCacheError("failed_precondition", `${quote(where)} holds no files: its archive layers are empty`);
  const kept = filterFiles(all, options.include, options.exclude).sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  options.limits?.check(kept);
  return kept;
}
