// The hub's tree entries of a served install: GET .../tree/{revision}[/{path}]
// lists a directory (every level with recursive), POST .../paths-info gives
// the entries of named paths. A file's oid is its git blob id when the hub
// listed one (the hub's small files), else its sha256 with an lfs part, as
// the hub answers for LFS files.
import { createHash } from "node:crypto";
import { quote } from "../errors.js";
import type { Runtime } from "../runtime.js";
import { hubNotFound } from "./hub-errors.js";
import type { ListedFile, ListedModel } from "./served-model.js";

export interface TreeEntry {
  type: "file" | "directory";
  path: string;
  size: number;
  oid: string;
  lfs?: { oid: string; size: number; pointerSize: number };
  /** with `expand`: the commit served (the hub names the last commit that touched the path; huggingface.js files its cache by it) */
  lastCommit?: { id: string; title: string; date: string };
}

/** The entries under `path` ("" for the top): its children, or with `recursive` every level below it. */
export async function listTree(runtime: Runtime, served: ListedModel, path: string, recursive: boolean): Promise<TreeEntry[]> {
  const prefix = path === "" ? "" : `${path}/`;
  const below = served.files.filter((file) => file.path.startsWith(prefix));
  if (below.length === 0) {
    const isFile = served.files.some((file) => file.path === path);
    throw hubNotFound("EntryNotFound", isFile ? `${quote(path)} is a file, not a directory: download it with /resolve/` : `no directory ${quote(path)} in ${quote(served.record.source)} at ${served.commit}`);
  }
  const entries = new Map<string, TreeEntry>();
  for (const file of below) {
    const parts = file.path.slice(prefix.length).split("/");
    const levels = recursive ? parts.length : 1;
    for (let level = 1; level <= levels; level++) {
      const entryPath = prefix + parts.slice(0, level).join("/");
      if (entries.has(entryPath)) continue;
      entries.set(entryPath, level === parts.length ? await fileEntry(runtime, file) : directoryEntry(served, entryPath));
    }
  }
  return [...entries.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/** The entries of the paths asked for that exist (files or directories), in the order asked; the others are left out, as the hub does. */
export async function pathsInfo(runtime: Runtime, served: ListedModel, paths: string[], expand: boolean): Promise<TreeEntry[]> {
  const entries: TreeEntry[] = [];
  for (const path of new Set(paths)) {
    const file = served.files.find((f) => f.path === path);
    if (file) entries.push(await fileEntry(runtime, file));
    else if (path !== "" && served.files.some((f) => f.path.startsWith(`${path}/`))) entries.push(directoryEntry(served, path));
  }
  return expand ? entries.map((entry) => withLastCommit(served, entry)) : entries;
}

/** `entry` with its lastCommit, as the hub adds it when asked to expand. */
export function withLastCommit(served: ListedModel, entry: TreeEntry): TreeEntry {
  return { ...entry, lastCommit: { id: served.commit, title: "", date: new Date(served.atMs).toISOString() } };
}

async function fileEntry(runtime: Runtime, file: ListedFile): Promise<TreeEntry> {
  const blobId = file.gitBlobId ?? (file.sha256 !== undefined ? (await runtime.store.known.get(file.sha256))?.gitBlobId : undefined);
  if (blobId || file.sha256 === undefined) return { type: "file", path: file.path, size: file.sizeBytes, oid: blobId ?? "" };
  return { type: "file", path: file.path, size: file.sizeBytes, oid: file.sha256, lfs: { oid: file.sha256, size: file.sizeBytes, pointerSize: pointerSize(file.sizeBytes) } };
}

/** A directory's oid stands for its content: a digest of the files under it, so it changes when they do. */
function directoryEntry(served: ListedModel, path: string): TreeEntry {
  const digest = createHash("sha1");
  for (const file of served.files) if (file.path.startsWith(`${path}/`)) digest.update(`${file.path}\0${file.sha256 ?? file.gitBlobId ?? ""}\0`);
  return { type: "directory", path, size: 0, oid: digest.digest("hex") };
}

/** The size of the git LFS pointer file of such content, which the hub reports: "version ...\noid sha256:...\nsize N\n". */
function pointerSize(sizeBytes: number): number {
  return "version https://git-lfs.github.com/spec/v1\n".length + "oid sha256:\n".length + 64 + "size \n".length + String(sizeBytes).length;
}
