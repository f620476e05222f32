// The regular files under a directory with their apparent sizes, without
// following symbolic links. Synchronous on purpose: an install holds tens of
// files, and a handful of stat calls in a row cost far less than as many
// round trips through the libuv thread pool.
import { type Stats, lstatSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { type InstallWatch, watchInstall, watchesRefused } from "./install-watch.js";
import { viewLinksOf } from "./view-links.js";

/** Relative '/'-separated path -> size in bytes, for every regular file below `dir`; undefined when `dir` cannot be listed. */
function regularFiles(dir: string): Map<string, number> | undefined {
  const files = walk(dir)?.files;
  return files && new Map([...files].map(([path, stat]) => [path, stat.size]));
}

export function footprintBytes(dir: string): number {
  let total = 0;
  for (const size of regularFiles(dir)?.values() ?? []) total += size;
  return total;
}

/**
 * What removing the install at `dir` frees: each of its files whose inode
 * no other install shares, counted once. A file's links are its own paths
 * in this install, plus the content store's name for it when it is stored:
 * any link beyond those (but the cache view's) is another install's (or a running pull's).
 */
export function exclusiveBytes(dir: string): number {
  return exclusiveOf(walk(dir)?.files.values() ?? []);
}

/**
 * What removing every install in `dirs` together frees: exclusiveBytes over
 * their union, so content only they share counts (once) too. Files whose
 * inode is in `kept` are not freed (content a pull counts on linking).
 */
export function freeableBytes(dirs: Iterable<string>, kept: ReadonlySet<number> = new Set()): number {
  const files: Stats[] = [];
  for (const dir of dirs) for (const stat of walk(dir)?.files.values() ?? []) if (!kept.has(stat.ino)) files.push(stat);
  return exclusiveOf(files);
}

/** exclusiveBytes, from the lstat of every file of an install. */
export function exclusiveOf(files: Iterable<Stats>): number {
  const inodes = new Map<number, { stat: Stats; paths: number }>();
  for (const stat of files) {
    const seen = inodes.get(stat.ino);
    if (seen) seen.paths += 1;
    else inodes.set(stat.ino, { stat, paths: 1 });
  }
  let total = 0;
  // the Hugging Face cache view's links are not references (they go with the install)
  for (const { stat, paths } of inodes.values()) if (stat.nlink - viewLinksOf(stat) <= paths + 1) total += stat.size;
  return total;
}

/**
 * As regularFiles, with each file's lstat, but the listing of an install inspected before is reused
 * while none of its directories changed: a directory's entries change only
 * with its mtime and ctime, so a stat of each directory stands in for reading
 * it, and each file is still stat'ed for its size. A listing whose directory
 * changed less than RACY_MS before it was read is not remembered, since a
 * second change within the clock's granularity would leave the same times.
 *
 * With `watch`, the install is also watched (install-watch.ts): while no
 * notification came for any of its paths, and `generation` (the layout's
 * count of installs moved) is the one the watch began under, the stats taken
 * then are the answer, with no call to the disk. A change made by another
 * process is seen once the server's event loop has read its notification,
 * which the kernel queues before the change's system call returns, and in
 * any case within WATCH_TRUSTED_MS. The watched answer is one map, the same
 * object until the watch ends. A directory changed within RACY_MS is not
 * watched yet (as it is not remembered), nor is anything while watches are refused.
 */
export function installFiles(dir: string, options: { watch?: boolean; generation?: number } = {}): ReadonlyMap<string, Stats> | undefined {
  const known = listings.get(dir);
  if (options.watch) {
    // the same map each time while the watch holds: callers may key what they derive from it by it
    const watched = known?.watched;
    if (watched?.watch.intact && watched.generation === options.generation) return watched.stats;
    if (!watchesRefused()) return remember(dir, options.generation);
  }
  if (known && unchanged(known.dirs)) {
    const files = new Map<string, Stats>();
    for (const [path, absolute] of known.files) {
      const stat = lstatSync(absolute, { throwIfNoEntry: false });
      // a file swapped for another kind in place: read the directories again
      if (!stat?.isFile()) return remember(dir);
      files.set(path, stat);
    }
    return files;
  }
  return remember(dir);
}

function unchanged(dirs: Map<string, string>): boolean {
  for (const [absolute, signature] of dirs) {
    if (signatureOf(lstatSync(absolute, { throwIfNoEntry: false })) !== signature) return false;
  }
  return true;
}

const RACY_MS = 1000;
/** How long a watch's word is taken before the install is listed again (install-watch.ts says why). */
const WATCH_TRUSTED_MS = 1000;
const MAX_REMEMBERED = 1024;

/** A listing whose every directory had settled when it was read. */
interface Listing {
  /** its directories (absolute path -> signature) */
  dirs: Map<string, string>;
  /** relative path -> absolute path */
  files: Map<string, string>;
  /** the watch on every directory and file, and the stats it vouches for */
  watched?: { watch: InstallWatch; stats: Map<string, Stats>; generation: number };
}
/** install dir -> what it held when last listed */
const listings = new Map<string, Listing>();

function forget(dir: string): void {
  listings.get(dir)?.watched?.watch.close();
  listings.delete(dir);
}

/** Lists `dir` again, remembering the listing when it settled; with a `generation` also watches what it found. */
function remember(dir: string, generation?: number): Map<string, Stats> | undefined {
  forget(dir);
  const walked = walk(dir);
  if (!walked?.settled) return walked?.files;
  const listing: Listing = { dirs: walked.dirs, files: new Map([...walked.files.keys()].map((path) => [path, join(dir, path)])) };
  if (generation !== undefined) listing.watched = watched(walked, listing.files, generation);
  while (listings.size >= MAX_REMEMBERED) forget(listings.keys().next().value!);
  listings.set(dir, listing);
  return walked.files;
}

/**
 * Watches every directory and file of a settled listing, then stats each
 * once more: a change made before the watches began shows as a difference,
 * one made after as a notification (a directory changed within the clock's
 * granularity, which a settled one was not, could change again unseen by
 * the second look). Undefined when the watch could not begin or something differs.
 */
function watched(walked: Walked, files: Map<string, string>, generation: number): Listing["watched"] {
  const watch = watchInstall([...walked.dirs.keys(), ...files.values()], WATCH_TRUSTED_MS);
  if (!watch) return undefined;
  const same = unchanged(walked.dirs) && [...files].every(([path, absolute]) => fileSignature(lstatSync(absolute, { throwIfNoEntry: false })) === fileSignature(walked.files.get(path)));
  if (!same || !watch.intact) {
    watch.close();
    return undefined;
  }
  return { watch, stats: walked.files, generation };
}

function signatureOf(stat: Stats | undefined): string | undefined {
  return stat?.isDirectory() ? `${stat.ino}:${stat.mtimeMs}:${stat.ctimeMs}:${stat.size}:${stat.nlink}` : undefined;
}

function fileSignature(stat: Stats | undefined): string | undefined {
  return stat?.isFile() ? `${stat.ino}:${stat.mtimeMs}:${stat.ctimeMs}:${stat.size}:${stat.nlink}:${stat.mode}` : undefined;
}

interface Walked {
  files: Map<string, Stats>;
  /** the signature of each directory last changed long enough ago to trust it (every one, when settled) */
  dirs: Map<string, string>;
  settled: boolean;
}

/** The files below `dir`, each directory's signature (taken before it is read), and whether every directory was last changed long enough ago to trust its signature. */
function walk(dir: string): Walked | undefined {
  const files = new Map<string, Stats>();
  const dirs = new Map<string, string>();
  let settled = true;
  const visit = (prefix: string): boolean => {
    const path = prefix === "" ? dir : join(dir, prefix);
    const stat = lstatSync(path, { throwIfNoEntry: false });
    const signature = signatureOf(stat);
    // a symbolic link to a directory is listed (as readdir follows it) but never trusted, nor watched
    if (signature === undefined || Date.now() - Math.max(stat!.mtimeMs, stat!.ctimeMs) < RACY_MS) settled = false;
    else dirs.set(path, signature);
    let names: string[];
    try {
      names = readdirSync(path);
    } catch {
      return false;
    }
    for (const name of names) {
      const child = prefix === "" ? name : `${prefix}/${name}`;
      const entry = lstatSync(join(dir, child), { throwIfNoEntry: false });
      if (entry?.isFile()) files.set(child, entry);
      else if (entry?.isDirectory()) visit(child);
    }
    return true;
  };
  return visit("") ? { files, dirs, settled } : undefined;
}
