// Opens what a download sends before anything is answered: a file of a
// served install (by a path the manifest lists), or stored content by
// digest. An open descriptor keeps the inode, so a drop, an eviction or a
// replacement of the install meanwhile does not cut the download short.
import { constants } from "node:fs";
import { type FileHandle, open } from "node:fs/promises";
import { join } from "node:path";
import { checkArtifactPath } from "../cache/layout.js";
import { ModelCacheError, quote } from "../errors.js";
import type { Runtime } from "../runtime.js";
import { hubNotFound } from "./hub-errors.js";
import type { ServedModel } from "./served-model.js";

export interface OpenedFile {
  handle: FileHandle;
  size: number;
  sha256: string;
}

/** The file at `path` of the served install, opened; EntryNotFound when the install has no such file. */
export async function openInstalledFile(served: ServedModel, path: string): Promise<OpenedFile> {
  try {
    checkArtifactPath(path, "the requested path");
  } catch (err) {
    throw hubNotFound("EntryNotFound", (err as Error).message);
  }
  const file = served.manifest.files.find((f) => f.path === path);
  if (!file) throw hubNotFound("EntryNotFound", `${quote(path)} is not a file of ${quote(served.record.source)} at ${served.commit} as installed here (not in the repository, or left out by the model's include/exclude)`);
  const opened = await openRegular(join(served.dir, file.path));
  if (!opened) throw hubNotFound("EntryNotFound", `${quote(path)} of model '${served.record.name}' is no longer installed (dropped or evicted meanwhile): ask again`);
  if (opened.size !== file.sizeBytes) {
    await opened.handle.close();
    throw new ModelCacheError("data_loss", `${quote(path)} of model '${served.record.name}' has ${opened.size} bytes on disk, its manifest says ${file.sizeBytes}: run 'modelcache inspect --deep' and pull it again`);
  }
  return { handle: opened.handle, size: file.sizeBytes, sha256: file.sha256 };
}

/** Stored content by its sha256; undefined when the store does not hold it, or holds it condemned. */
export async function openStoredContent(runtime: Runtime, sha256: string): Promise<OpenedFile | undefined> {
  const { store } = runtime;
  const opened = await openRegular(store.blobPath(sha256));
  if (opened && store.anyCondemned) {
    // content found corrupt keeps the store's name until the installs holding it are marked: it is never sent meanwhile
    let condemned: boolean;
    try {
      condemned = store.isCondemned(sha256, (await opened.handle.stat({ bigint: true })).ino);
    } catch (err) {
      await opened.handle.close();
      throw err;
    }
    if (condemned) {
      await opened.handle.close();
      return undefined;
    }
  }
  return opened && { ...opened, sha256 };
}

/** Opens a regular file without following a symbolic link; undefined when nothing is there. */
async function openRegular(path: string): Promise<{ handle: FileHandle; size: number } | undefined> {
  let handle: FileHandle;
  try {
    handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ELOOP") return undefined;
    throw err;
  }
  try {
    const stats = await handle.stat();
    if (!stats.isFile()) {
      await handle.close();
      return undefined;
    }
    return { handle, size: stats.size };
  } catch (err) {
    await handle.close();
    throw err;
  }
}
