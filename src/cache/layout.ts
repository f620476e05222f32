// Where things live under the cache root. Every path handed out here is
// built from a checked name, so nothing outside the root can be addressed.
import { isAbsolute, join, posix } from "node:path";
import { ModelCacheError, quote } from "../errors.js";
import { checkName } from "../registry/names.js";

export const MANIFEST_FILE = "manifest.json";
/** in a model's partial dir (per commit): entries an OCI pull unpacked from its verified blobs for the install; never resumed from */
export const UNPACKED_DIR = ".unpacked";

/** names whose install directory is remembered at once (more are forgotten together) */
const MOST_REMEMBERED_DIRS = 4096;

export class CacheLayout {
  readonly staging: string;
  readonly purge: string;
  readonly partial: string;
  /** where earlier versions kept resumable downloads */
  readonly legacyPartial: string;
  /**
   * How many times this process has moved an install out of its place (a
   * drop, an eviction, a replacement): a caller that saw the same count
   * before and after a step knows no install was taken away in between.
   */
  installsMoved = 0;
  /** install directories handed out before, by name (a lookup per call costs less than a check and a join) */
  readonly #modelDirs = new Map<string, string>();

  constructor(readonly root: string) {
    this.staging = join(root, ".staging");
    this.purge = join(root, ".purge");
    // in the content store's area: a finished download is renamed into the store, never copied
    this.partial = join(root, ".blobs", "partial");
    this.legacyPartial = join(root, ".partial");
  }

  /** `<root>/.blobs/partial/<name>[/<commit>]`: resumable downloads from a hub, kept across cancels and restarts. */
  partialDir(name: string, commit?: string): string {
    const dir = join(this.partial, checkName("name", name));
    if (commit === undefined) return dir;
    if (!/^[0-9a-f]{40}$/.test(commit)) throw new ModelCacheError("invalid_argument", `commit ${quote(commit)} is not a 40-digit hex sha`);
    return join(dir, commit);
  }

  /** `<root>/<name>`: where a model's install lives. */
  modelDir(name: string): string {
    let dir = this.#modelDirs.get(name);
    if (dir === undefined) {
      dir = join(this.root, checkName("name", name));
      if (this.#modelDirs.size >= MOST_REMEMBERED_DIRS) this.#modelDirs.clear();
      this.#modelDirs.set(name, dir);
    }
    return dir;
  }
}

/**
 * Checks a file path taken from a source or a manifest: relative, '/'-separated,
 * no '.' or '..' parts, no empty parts, no control characters. Returns it unchanged.
 */
export function checkArtifactPath(path: string, where: string): string {
  const problem =
    path === ""
      ? "is empty"
      : isAbsolute(path) || path.startsWith("/")
        ? "is absolute"
        : /[\u0000-\u001f\u007f\\]/.test(path)
          ? "contains a control character or a backslash"
          : path.split("/").some((part) => part === "" || part === "." || part === "..")
            ? "has an empty, '.' or '..' part"
            : posix.normalize(path) !== path
              ? "is not in normal form"
              : undefined;
  if (problem) {
    throw new ModelCacheError("invalid_argument", `${where}: file path ${quote(path)} ${problem}`);
  }
  return path;
}
