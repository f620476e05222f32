// An OCI source's archive layers (.tar, .tar+gzip) fetched and unpacked
// inside the pull, once it holds the model's lock and has said PullStarted:
// each blob downloaded (resumable, verified by digest) into the model's
// partial dir, reported as a transfer named by its digest, then unpacked
// beside it; the install's listing is the raw layers' files and the entries.
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { MANIFEST_FILE, UNPACKED_DIR } from "../../cache/layout.js";
import { ModelCacheError, quote } from "../../errors.js";
import type { SourceFile, TransferObserver } from "../artifact-source.js";
import { filterFiles, passesFilters } from "../file-filters.js";
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
  /** the pull's limits (PullLimits), checked on each entry before it is written and on the whole listing */
  limits?: { check(files: readonly SourceFile[]): void; maxFiles: number; maxFileBytes: number; maxTotalBytes: number };
  /** the source's download of a blob (connections, ranges, rate cap) into `partialPath` */
  download(file: OciFile, partialPath: string, signal: AbortSignal, onBytes: (bytes: number) => void): Promise<unknown>;
  signal: AbortSignal;
  observer: TransferObserver;
}

/** An archive layer as the pull sees it before it is unpacked: a transfer named by its digest, of its blob's size (compressed for .tar+gzip). */
function archiveTransfer(archive: ArchiveLayer): OciFile {
  return { path: archive.digest, sizeBytes: archive.size, sha256: archive.digest.slice("sha256:".length), digest: archive.digest };
}

/** Room asked for at once while unpacking, so an archive of many small entries does not ask capacity for each one. */
const RESERVE_STEP = 8 * 1024 * 1024;

/** The install's listing: the raw layers' files and every archive's entries, filtered, checked against the pull's limits, sorted by path. */
export async function fetchArchiveLayers(options: FetchArchiveLayersOptions): Promise<SourceFile[]> {
  const { where, partialDir, signal, observer, include, exclude } = options;
  const limits = options.limits;
  const unpacked = join(partialDir, UNPACKED_DIR);
  // what an earlier pull of this model unpacked and did not install (a failure, a crash): nobody else writes here while the lock is held
  await rm(unpacked, { recursive: true, force: true });
  // every path of the install so far, and the directories they need: an entry that names one again, or makes a file a directory, is refused before it is written
  const names = new Set<string>();
  const dirs = new Set<string>();
  const claim = (path: string, who: string) => {
    const parents = path.split("/").slice(0, -1).map((_, i, parts) => parts.slice(0, i + 1).join("/"));
    if (names.has(path) || dirs.has(path) || parents.some((dir) => names.has(dir))) throw new ModelCacheError("failed_precondition", `${who} names the file ${quote(path)}, which another entry or layer of ${quote(where)} names too (as a file or a directory)`);
    names.add(path);
    for (const dir of parents) dirs.add(dir);
  };
  for (const file of options.files) claim(file.path, `a layer of ${quote(where)}`);
  const kept: OciFile[] = options.files.filter((f) => passesFilters(f.path, include, exclude));
  let keptBytes = kept.reduce((sum, file) => sum + file.sizeBytes, 0);
  // room reserved for entries and not yet taken by one
  let room = 0;
  const refuse = (what: string) => new ModelCacheError("resource_exhausted", `${what}; narrow the model with include/exclude, or raise the server's limit`);
  try {
    for (const [k, archive] of options.archives.entries()) {
      const blob = archiveTransfer(archive);
      const hex = blob.sha256!;
      const what = `layer ${archive.index} of ${quote(where)} (${archive.digest})`;
      const blobPath = join(partialDir, ".layers", hex);
      // the pull's first transfers: the install's files are numbered after them (PullJob)
      observer.fileStarted(blob, k);
      await options.download(blob, blobPath, signal, (n) => observer.bytesWritten(blob, n));
      observer.fileCompleted(blob, hex, false);
      // each entry is checked and its room reserved before a byte of it is written: a compressed layer may expand far past its blob
      const admit = async (path: string, sizeBytes: number): Promise<boolean> => {
        const entry = `${what}, entry ${quote(path)}`;
        if (path === MANIFEST_FILE) throw new ModelCacheError("failed_precondition", `${what} holds ${quote(path)}, which the cache keeps for itself`);
        claim(path, what);
        if (!passesFilters(path, include, exclude)) return false;
        if (limits) {
          if (kept.length + 1 > limits.maxFiles) throw refuse(`${entry} makes more than --max-files-per-pull (${limits.maxFiles}) files`);
          if (sizeBytes > limits.maxFileBytes) throw refuse(`${entry} is ${sizeBytes} bytes, more than --max-file-bytes (${limits.maxFileBytes})`);
          if (keptBytes + sizeBytes > limits.maxTotalBytes) throw refuse(`${entry} (${sizeBytes} bytes) brings the model's files past --max-pull-bytes (${limits.maxTotalBytes}): a compressed layer may unpack to far more than its blob`);
        }
        if (sizeBytes > room && observer.reserve) room += await reserveRoom(observer.reserve.bind(observer), sizeBytes - room, `${entry} (${sizeBytes} bytes)`);
        room = Math.max(0, room - sizeBytes);
        keptBytes += sizeBytes;
        kept.push({ path, sizeBytes, digest: archive.digest });
        return true;
      };
      const before = kept.length;
      // on disk in the partial dir, an entry counts as stored: its room is no longer reserved
      const written = (file: { sizeBytes: number }) => observer.written?.(file.sizeBytes);
      const files = await unpackLayer(blobPath, archive.mediaType.endsWith("+gzip"), archive.prefix, join(unpacked, hex), what, { admit, written }, signal);
      // the entries admitted, now with what they hold
      for (const [i, file] of files.entries()) kept[before + i] = { path: file.path, sizeBytes: file.sizeBytes, sha256: file.sha256, digest: archive.digest, localPath: file.localPath };
    }
  } catch (err) {
    // a refused, failed or cancelled unpack leaves none of its entries behind; the verified blobs in .layers stay for the next pull
    await rm(unpacked, { recursive: true, force: true });
    throw err;
  }
  if (names.size === 0) throw new ModelCacheError("failed_precondition", `${quote(where)} holds no files: its archive layers are empty`);
  // throws: no file passes the filters
  if (kept.length === 0) filterFiles([...names].map((path) => ({ path, sizeBytes: 0 })), include, exclude);
  kept.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  limits?.check(kept);
  return kept;
}

/** Reserves at least `needed` bytes (a step more when that fits without evicting, so a run of small entries asks once); how many it reserved. */
async function reserveRoom(reserve: (bytes: number, slack: number) => Promise<number>, needed: number, what: string): Promise<number> {
  try {
    return await reserve(needed, Math.max(0, RESERVE_STEP - needed));
  } catch (err) {
    if (err instanceof ModelCacheError && err.kind === "resource_exhausted") throw new ModelCacheError("resource_exhausted", `${what}: ${err.message}`, { cause: err });
    throw err;
  }
}
