// Installs a source's files the way containerd commits content: everything
// is written into a private staging dir, hashed in the same streaming pass
// and synced; the manifest goes last; then one rename makes the new install
// visible and the old one is parked in .purge/ and deleted. Any failure
// before that rename removes the staging dir and leaves the previous
// install untouched. Several files are in flight at once; memory per file
// is a few chunks, whatever its size.
import { randomBytes } from "node:crypto";
import { lstat, mkdir, rename, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { errorCode, filesystemError } from "../errors.js";
import type { ArtifactSource, SourceFile } from "../sources/artifact-source.js";
import { syncDirectory, writeFileDurably } from "./durable.js";
import { type CacheLayout, MANIFEST_FILE } from "./layout.js";
import type { FileCopier } from "./file-copier.js";
import type { Manifest, ManifestFile } from "./manifest.js";
import { serializeManifest } from "./manifest.js";
import { markParkedForDelete, parkInstall } from "./park-install.js";

/** Told about each file as the install goes; calls come in path order for fileStarted. */
export interface InstallObserver {
  fileStarted(file: SourceFile, index: number): void;
  bytesWritten(file: SourceFile, bytes: number): void;
  fileCompleted(file: SourceFile, sha256: string, reused: boolean): void;
}

export interface InstallArtifactsOptions {
  layout: CacheLayout;
  name: string;
  source: ArtifactSource;
  /** what the manifest says about the model besides its files */
  model: Pick<Manifest, "source" | "revision" | "task" | "engine" | "dimensions">;
  signal: AbortSignal;
  observer: InstallObserver;
  /** files copied at once */
  concurrency: number;
  /** copies and hashes the files of a local source on worker threads */
  copier: FileCopier;
  /** the current install's manifest: its files may be reused where the copier proves them identical */
  reuse?: Manifest;
  /** a last check before the new install is made visible; what it throws fails the install */
  beforePromote?: () => Promise<void>;
  /** makes a directory's entries durable; the default fsyncs it */
  syncDirectory?: (path: string) => Promise<void>;
}

/** Installs the source's files and returns the manifest once the install is promoted. */
export async function installArtifacts(options: InstallArtifactsOptions): Promise<Manifest> {
  const { layout, name, source, observer } = options;
  // the first file to fail stops the others
  const stop = new AbortController();
  const signal = AbortSignal.any([options.signal, stop.signal]);
  const staging = join(layout.staging, `${name}.${randomBytes(6).toString("hex")}`);
  await mkdir(staging, { recursive: true }).catch((err: unknown) => {
    throw filesystemError("create the staging dir", staging, err);
  });
  let promoted = false;
  try {
    const directories = new Set<string>([staging]);
    const reusable = new Map((options.reuse?.files ?? []).map((f) => [f.path, f]));
    const digests: string[] = new Array(source.files.length);
    let next = 0;
    const worker = async () => {
      while (next < source.files.length) {
        signal.throwIfAborted();
        const index = next++;
        const file = source.files[index]!;
        observer.fileStarted(file, index);
        const target = join(staging, file.path);
        // every directory the file's path creates holds an entry to make durable, not only its parent
        for (let dir = dirname(target); dir.length > staging.length; dir = dirname(dir)) directories.add(dir);
        try {
          const previous = reusable.get(file.path);
          const installedPath = join(layout.modelDir(name), file.path);
          const installed =
            previous?.sizeBytes === file.sizeBytes && (await isReusable(installedPath, file.sizeBytes)) ? { path: installedPath, sha256: previous.sha256 } : undefined;
          const onBytes = (n: number) => observer.bytesWritten(file, n);
          if ("fetchInto" in source) {
            await mkdir(dirname(target), { recursive: true });
            digests[index] = await source.fetchInto(file, target, signal, onBytes, installed);
          } else {
            await mkdir(dirname(target), { recursive: true });
            digests[index] = await options.copier.copy(source.localPath(file), target, file.sizeBytes, signal, onBytes, installed);
          }
        } catch (err) {
          stop.abort(err);
          throw err;
        }
        observer.fileCompleted(file, digests[index]!, false);
      }
    };
    const workers = Array.from({ length: Math.max(1, Math.min(options.concurrency, source.files.length)) }, worker);
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
    await promote(layout, name, staging);
    promoted = true;
    await source.installed?.();
    return manifest;
  } finally {
    if (!promoted) await rm(staging, { recursive: true, force: true });
  }
}

/**
 * Whether the install still holds a regular file of the listed size at
 * `path`, worth proving identical; when it is gone (or was replaced by
 * something else) the file is copied afresh, which is how a Pull repairs.
 */
async function isReusable(path: string, sizeBytes: number): Promise<boolean> {
  try {
    const stats = await lstat(path);
    return stats.isFile() && stats.size === sizeBytes;
  } catch (err) {
    // missing, or a path part is no longer a directory: nothing to reuse
    const code = errorCode(err);
    if (code === "ENOENT" || code === "ENOTDIR") return false;
    throw filesystemError("read", path, err);
  }
}

/**
 * Swaps the staging dir in: the old install is parked as a swap (to be put
 * back if a crash comes before the new one is in place), the new one renamed
 * into place, then the old one marked for deletion and deleted.
 */
async function promote(layout: CacheLayout, name: string, staging: string): Promise<void> {
  const target = layout.modelDir(name);
  const parked = await parkInstall(layout, name, "swap");
  try {
    await rename(staging, target);
  } catch (err) {
    if (parked) await rename(parked, target);
    throw filesystemError("move the new install into", target, err);
  }
  await syncDirectory(layout.root);
  if (parked) await rm(await markParkedForDelete(layout, parked), { recursive: true, force: true });
}
