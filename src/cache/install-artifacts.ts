// Installs a source's files the way containerd commits content: each file's
// content goes into the content store (written under a temporary name,
// hashed in the same streaming pass, synced, renamed to its sha256) unless
// the store already holds it intact, and is hard-linked into a private
// staging dir; the manifest goes last; then one rename makes the new install
// visible and the old one is parked in .purge/ and deleted, and its content
// no install references any more leaves the store. Any failure before that
// rename removes the staging dir and leaves the previous install untouched.
// Several files are in flight at once; memory per file is a few chunks,
// whatever its size.
import { randomBytes } from "node:crypto";
import { setMaxListeners } from "node:events";
import { mkdir, rename, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { filesystemError } from "../errors.js";
import type { ArtifactSource, SourceFile } from "../sources/artifact-source.js";
import { attemptProgress } from "../sources/attempt-progress.js";
import type { ContentStore } from "../store/content-store.js";
import { releaseContent } from "../store/collect-garbage.js";
import { commitContent } from "../store/ingest.js";
import { linkContent } from "../store/link-content.js";
import { matchContent } from "../store/match-content.js";
import { type Hasher, verifyContent } from "../store/verify-content.js";
import { syncDirectory, writeFileDurably } from "../fs/durable.js";
import { hashWhole } from "./hash-behind.js";
import { type CacheLayout, MANIFEST_FILE } from "./layout.js";
import type { FileCopier } from "./file-copier.js";
import type { Manifest, ManifestFile } from "./manifest.js";
import { serializeManifest } from "./manifest.js";
import { markParkedForDelete, parkInstall } from "./park-install.js";
import { readManifest } from "./read-manifest.js";

/** files under this size take the small files' worker (see installArtifacts) */
const SMALL_FILE_BYTES = 1024 * 1024;
/** abort listeners one file in flight may add to the pull's signal at once (see installArtifacts) */
const LISTENERS_PER_FILE = 4;

/** Told about each file as the install goes; fileStarted comes for the large files (1 MiB or more) in path order, and for the small ones in path order, the two interleaved. */
export interface InstallObserver {
  fileStarted(file: SourceFile, index: number): void;
  bytesWritten(file: SourceFile, bytes: number): void;
  /** `reused`: the content came from the store, neither fetched nor written */
  fileCompleted(file: SourceFile, sha256: string, reused: boolean): void;
}

export interface InstallArtifactsOptions {
  layout: CacheLayout;
  store: ContentStore;
  name: string;
  source: ArtifactSource;
  /** what the manifest says about the model besides its files */
  model: Pick<Manifest, "source" | "revision" | "task" | "engine" | "dimensions">;
  signal: AbortSignal;
  observer: InstallObserver;
  /** the index the first file's events carry: the pull's transfers before the install's (an OCI source's archive layers) come first */
  firstIndex?: number;
  /** files copied at once, beside one more for small files */
  concurrency: number;
  /** copies and hashes the files of a local source on worker threads */
  copier: FileCopier;
  /** fetch every file from a hub again, and hash stored content again before it is reused */
  force?: boolean;
  /** a last check before the new install is made visible; what it throws fails the install */
  beforePromote?: () => Promise<void>;
  /** told of the new install once it is in place, before the one it replaced releases its content */
  promoted?: (manifest: Manifest) => Promise<void>;
  /** makes a directory's entries durable; the default fsyncs it */
  syncDirectory?: (path: string) => Promise<void>;
}

/** Installs the source's files and returns the manifest once the install is promoted. */
export async function installArtifacts(options: InstallArtifactsOptions): Promise<Manifest> {
  const { layout, name, source, observer } = options;
  // the first file to fail stops the others
  const stop = new AbortController();
  const signal = AbortSignal.any([options.signal, stop.signal]);
  // every file in flight listens to it: its request (undici and requestPromptly each), a hash of its stored
  // copy, a wait for its blob's lock. Bounded by the workers, not a leak: without this, a pull of more than
  // a few files at once printed Node's "possible EventTarget memory leak" warning
  setMaxListeners(LISTENERS_PER_FILE * (options.concurrency + 1), signal);
  const staging = join(layout.staging, `${name}.${randomBytes(6).toString("hex")}`);
  await mkdir(staging, { recursive: true }).catch((err: unknown) => {
    throw filesystemError("create the staging dir", staging, err);
  });
  let promoted = false;
  try {
    const directories = new Set<string>([staging]);
    const digests: string[] = new Array(source.files.length);
    // the large files in path order, then the small ones; small files (configs, tokenizers, READMEs) have
    // one more worker of their own, so that they never wait behind large ones, nor large ones behind them
    const large = source.files.flatMap((f, i) => (f.sizeBytes >= SMALL_FILE_BYTES ? [i] : []));
    const small = source.files.flatMap((f, i) => (f.sizeBytes < SMALL_FILE_BYTES ? [i] : []));
    const worker = async (smallOnly: boolean) => {
      for (;;) {
        const index = smallOnly ? small.shift() : (large.shift() ?? small.shift());
        if (index === undefined) return;
        signal.throwIfAborted();
        const file = source.files[index]!;
        observer.fileStarted(file, (options.firstIndex ?? 0) + index);
        const target = join(staging, file.path);
        // every directory the file's path creates holds an entry to make durable, not only its parent
        for (let dir = dirname(target); dir.length > staging.length; dir = dirname(dir)) directories.add(dir);
        let placed: { sha256: string; reused: boolean };
        try {
          await mkdir(dirname(target), { recursive: true });
          placed = await placeFile(options, file, target, signal, (n) => observer.bytesWritten(file, n));
        } catch (err) {
          stop.abort(err);
          throw err;
        }
        digests[index] = placed.sha256;
        observer.fileCompleted(file, placed.sha256, placed.reused);
      }
    };
    // decided before the workers start: they take files off both lists as they start
    const smallWorker = large.length > 0 && small.length > 0;
    const workers = Array.from({ length: Math.max(1, Math.min(options.concurrency, source.files.length)) }, () => worker(false));
    if (smallWorker) workers.push(worker(true));
    // every worker settles before the staging dir can be removed
    const settled = await Promise.allSettled(workers);
    if (settled.some((r) => r.status === "rejected")) {
      throw options.signal.aborted ? options.signal.reason : stop.signal.reason;
    }

    const files: ManifestFile[] = source.files.map((f, i) => ({ path: f.path, sha256: digests[i]!, sizeBytes: f.sizeBytes }));
    const totalSizeBytes = files.reduce((sum, f) => sum + f.sizeBytes, 0);
    const manifest: Manifest = { name, ...options.model, installedAtMs: Date.now(), totalSizeBytes, files, resolvedCommit: source.resolvedCommit ?? "" };
    const manifestPath = join(staging, MANIFEST_FILE);
    await writeFileDurably(manifestPath, serializeManifest(manifest)).catch((err: unknown) => {
      throw filesystemError("write", manifestPath, err);
    });
    const sync = options.syncDirectory ?? syncDirectory;
    for (const dir of directories) await sync(dir);
    await options.beforePromote?.();
    signal.throwIfAborted();
    await promote(layout, options.store, name, staging, () => options.promoted?.(manifest));
    promoted = true;
    await source.installed?.();
    return manifest;
  } finally {
    if (!promoted) {
      await rm(staging, { recursive: true, force: true });
      // content this pull committed and nothing else holds stays until PruneCache: another pull may want it
    }
  }
}

/**
 * Puts one file's content at `target`: linked from the store when it holds
 * the content intact (from a hub known by the listed sha256 or git blob id,
 * from a directory by hashing the file first when the store has content of
 * its size), otherwise fetched or copied into the store, then linked.
 */
async function placeFile(
  options: InstallArtifactsOptions,
  file: SourceFile,
  target: string,
  signal: AbortSignal,
  onBytes: (bytes: number) => void,
): Promise<{ sha256: string; reused: boolean }> {
  const { store, source, copier } = options;
  const hasher = (path: string, s: AbortSignal) => copier.hash(path, s);
  const force = options.force === true;
  const reuse = async (sha256: string | undefined): Promise<boolean> =>
    sha256 !== undefined &&
    (await store.withBlob(sha256, signal, async () => {
      const checked = await verifyContent(store, sha256, hasher, signal, force);
      // false when it changed, or another server sharing the cache root collected it, since the check: fetched or copied again
      return checked !== undefined && (await linkContent(store, sha256, target, checked));
    }));
  if ("fetch" in source) {
    const listed = file.sha256 ?? (file.gitBlobId ? await store.blobIds.get(file.gitBlobId) : undefined);
    if (!force && (await reuse(listed))) {
      onBytes(file.sizeBytes);
      return { sha256: listed!, reused: true };
    }
    // every attempt's bytes are counted once
    const attempt = attemptProgress(onBytes);
    // a forced pull never links a stored copy it has not hashed again, on the hashing thread: where the
    // source can compare, while the source's bytes are compared with it (kept unwritten when both hold),
    // otherwise, or when they differ, while the file downloads, not after it
    const hashStored: Hasher = (path, s) => hashWhole(path, undefined, s);
    const match = source.match;
    const compared =
      force && listed !== undefined && match && file.sizeBytes > 0
        ? await matchContent(store, listed, file.sizeBytes, hashStored, signal, target, (stored, s) => match.call(source, file, stored, s, attempt()))
        : undefined;
    if (compared?.linked) {
      source.kept?.(file);
      return { sha256: listed!, reused: false };
    }
    const recheck = compared ? compared.checked : force && listed !== undefined ? store.withBlob(listed, signal, () => verifyContent(store, listed, hashStored, signal, true)) : undefined;
    // a check that fails (the stored copy unreadable) ends the download at once, and is the failure told
    const checkFailed = new AbortController();
    recheck?.catch((err: unknown) => checkFailed.abort(err));
    let fetched: Awaited<ReturnType<typeof source.fetch>>;
    try {
      fetched = await source.fetch(file, recheck ? AbortSignal.any([signal, checkFailed.signal]) : signal, attempt());
    } catch (err) {
      // the check settles first, as its hashing may still read the blob
      await recheck?.catch(() => undefined);
      if (!signal.aborted && checkFailed.signal.aborted) throw checkFailed.signal.reason;
      throw err;
    }
    await recheck;
    // hashed during the download: from here the blob's signature says whether it changed since
    const rechecked = recheck !== undefined && fetched.sha256 === listed;
    await store.withBlob(fetched.sha256, signal, async () => {
      const content = { ...fetched, sizeBytes: file.sizeBytes, gitBlobId: file.sha256 === undefined ? file.gitBlobId : undefined };
      await commitContent(store, content, hasher, signal, target, force && !rechecked);
    });
    return { sha256: fetched.sha256, reused: false };
  }
  const from = source.localPath(file);
  if (force || store.mayHoldSize(file.sizeBytes)) {
    // the file must be read to learn its content: read once without writing, and written only when the store lacks it
    const sha256 = await hasher(from, signal);
    if (await reuse(sha256)) {
      onBytes(file.sizeBytes);
      return { sha256, reused: true };
    }
  }
  const ingest = store.ingestPath();
  store.ingesting.add(ingest);
  try {
    const sha256 = await copier.copy(from, ingest, file.sizeBytes, signal, onBytes);
    await store.withBlob(sha256, signal, async () => {
      await commitContent(store, { path: ingest, sha256, sizeBytes: file.sizeBytes }, hasher, signal, target, force);
    });
    return { sha256, reused: false };
  } finally {
    store.ingesting.delete(ingest);
    // committed: renamed away already; failed: a partial copy nobody will resume
    await rm(ingest, { force: true });
  }
}

/**
 * Swaps the staging dir in: the old install is parked as a swap (to be put
 * back if a crash comes before the new one is in place), the new one renamed
 * into place, then the old one marked for deletion and deleted, and its
 * content that nothing references any more removed from the store.
 */
async function promote(layout: CacheLayout, store: ContentStore, name: string, staging: string, promoted: () => Promise<void> | undefined): Promise<void> {
  const target = layout.modelDir(name);
  const parked = await parkInstall(layout, name, "swap");
  try {
    await rename(staging, target);
  } catch (err) {
    if (parked) await rename(parked, target);
    throw filesystemError("move the new install into", target, err);
  }
  await syncDirectory(layout.root);
  try {
    // the cache view lets go of the old install's content before it is released (its links are no references)
    await promoted();
  } finally {
    if (parked) await releaseReplaced(layout, store, parked);
  }
}

async function releaseReplaced(layout: CacheLayout, store: ContentStore, parked: string): Promise<void> {
  const deleting = await markParkedForDelete(layout, parked);
  const replaced = manifestIn(deleting);
  await releaseContent(store, deleting, replaced?.files ?? []);
}

/** The manifest of an install (parked or in place), if it has a readable one. */
export function manifestIn(dir: string): Manifest | undefined {
  try {
    return readManifest(join(dir, MANIFEST_FILE));
  } catch {
    // unreadable: its content is left to PruneCache
    return undefined;
  }
}
