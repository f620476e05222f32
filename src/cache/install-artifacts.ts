// Installs a source's files the way containerd commits content: everything
// is written into a private staging dir, hashed in the same pass and synced;
// the manifest goes last; then one rename makes the new install visible and
// the old one is parked in .purge/ and deleted. Any failure before that
// rename removes the staging dir and leaves the previous install untouched.
import { createHash, randomBytes } from "node:crypto";
import { mkdir, open, rename, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { filesystemError } from "../errors.js";
import type { ArtifactSource, SourceFile } from "../sources/artifact-source.js";
import { syncDirectory, writeFileDurably } from "./durable.js";
import { type CacheLayout, MANIFEST_FILE } from "./layout.js";
import type { Manifest, ManifestFile } from "./manifest.js";
import { serializeManifest } from "./manifest.js";
import { parkInstall } from "./park-install.js";

export type FileEvent =
  | { type: "file_started"; path: string; index: number; sizeBytes: number }
  | { type: "file_progress"; path: string; bytesDone: number; sizeBytes: number; totalBytesDone: number; totalBytes: number }
  | { type: "file_completed"; path: string; sha256: string; sizeBytes: number };

export interface InstallArtifactsOptions {
  layout: CacheLayout;
  name: string;
  source: ArtifactSource;
  /** what the manifest says about the model besides its files */
  model: Pick<Manifest, "source" | "revision" | "task" | "engine" | "dimensions">;
  signal: AbortSignal;
  /** the least time between two file_progress events */
  progressIntervalMs: number;
}

/** Yields per-file events while installing; returns the manifest once the install is promoted. */
export async function* installArtifacts(options: InstallArtifactsOptions): AsyncGenerator<FileEvent, Manifest> {
  const { layout, name, source, signal } = options;
  const staging = join(layout.staging, `${name}.${randomBytes(6).toString("hex")}`);
  await mkdir(staging, { recursive: true }).catch((err: unknown) => {
    throw filesystemError("create the staging dir", staging, err);
  });
  let promoted = false;
  try {
    const totalBytes = source.files.reduce((sum, f) => sum + f.sizeBytes, 0);
    const progress = { totalBytes, totalBytesDone: 0, lastAt: 0, intervalMs: options.progressIntervalMs };
    const directories = new Set<string>([staging]);
    const files: ManifestFile[] = [];
    for (const [index, file] of source.files.entries()) {
      signal.throwIfAborted();
      yield { type: "file_started", path: file.path, index, sizeBytes: file.sizeBytes };
      const target = join(staging, file.path);
      directories.add(dirname(target));
      const sha256 = yield* copyAndHash(source, file, target, progress, signal);
      files.push({ path: file.path, sha256, sizeBytes: file.sizeBytes });
      yield { type: "file_completed", path: file.path, sha256, sizeBytes: file.sizeBytes };
    }
    const manifest: Manifest = { name, ...options.model, installedAtMs: Date.now(), totalSizeBytes: totalBytes, files };
    const manifestPath = join(staging, MANIFEST_FILE);
    await writeFileDurably(manifestPath, serializeManifest(manifest)).catch((err: unknown) => {
      throw filesystemError("write", manifestPath, err);
    });
    for (const dir of directories) await syncDirectory(dir);
    signal.throwIfAborted();
    await promote(layout, name, staging);
    promoted = true;
    return manifest;
  } finally {
    if (!promoted) await rm(staging, { recursive: true, force: true });
  }
}

async function* copyAndHash(
  source: ArtifactSource,
  file: SourceFile,
  target: string,
  progress: { totalBytes: number; totalBytesDone: number; lastAt: number; intervalMs: number },
  signal: AbortSignal,
): AsyncGenerator<FileEvent, string> {
  await mkdir(dirname(target), { recursive: true }).catch((err: unknown) => {
    throw filesystemError("create a directory in", dirname(target), err);
  });
  const handle = await open(target, "wx", 0o644).catch((err: unknown) => {
    throw filesystemError("create", target, err);
  });
  const hash = createHash("sha256");
  let bytesDone = 0;
  try {
    for await (const chunk of source.read(file, signal)) {
      hash.update(chunk);
      await writeAll(handle, chunk).catch((err: unknown) => {
        throw filesystemError("write", target, err);
      });
      bytesDone += chunk.length;
      progress.totalBytesDone += chunk.length;
      const now = Date.now();
      if (bytesDone < file.sizeBytes && now - progress.lastAt >= progress.intervalMs) {
        progress.lastAt = now;
        yield { type: "file_progress", path: file.path, bytesDone, sizeBytes: file.sizeBytes, totalBytesDone: progress.totalBytesDone, totalBytes: progress.totalBytes };
      }
    }
    await handle.sync();
  } finally {
    await handle.close();
  }
  return hash.digest("hex");
}

async function writeAll(handle: import("node:fs/promises").FileHandle, chunk: Buffer): Promise<void> {
  let offset = 0;
  while (offset < chunk.length) {
    const { bytesWritten } = await handle.write(chunk, offset, chunk.length - offset);
    offset += bytesWritten;
  }
}

/** Swaps the staging dir in: the old install is parked, the new one renamed into place, the old one deleted. */
async function promote(layout: CacheLayout, name: string, staging: string): Promise<void> {
  const target = layout.modelDir(name);
  const parked = await parkInstall(layout, name);
  try {
    await rename(staging, target);
  } catch (err) {
    if (parked) await rename(parked, target);
    throw filesystemError("move the new install into", target, err);
  }
  await syncDirectory(layout.root);
  if (parked) await rm(parked, { recursive: true, force: true });
}
