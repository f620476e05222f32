// The Hugging Face cache view (--hf-cache-dir): the hub cache layout of every
// install that came from a hub commit, made of hard links to the installs'
// content, kept in step with the installs. Each repository folder is brought
// to what its installs want in one order: refs that go, then blobs and
// snapshots that come (a new snapshot built under a temporary name and
// renamed in), refs written (temporary file, rename), then snapshots, files
// and blobs nothing wants. A reader never sees a ref to a snapshot missing a
// file. The view is derived state: startup rebuilds it from the installs, so
// its steps need no fsync.
import { randomBytes } from "node:crypto";
import { type Stats, lstatSync } from "node:fs";
import { link, lstat, mkdir, readFile, readdir, readlink, rename, rm, rmdir, symlink, unlink, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { CacheLayout } from "../cache/layout.js";
import type { Manifest } from "../cache/manifest.js";
import { countViewLinks } from "../cache/view-links.js";
import { KeyedLock } from "../concurrency/keyed-lock.js";
import { ModelCacheError, errorCode, filesystemError } from "../errors.js";

const COMMIT = /^[0-9a-f]{40}$/;
const SHA256 = /^[0-9a-f]{64}$/;
/** what a hub repository id looks like (as the model spec's validation accepts it) */
const REPO_ID = /^(?:[A-Za-z0-9_.-]+\/)?[A-Za-z0-9_.-]+$/;
const TEMP = ".tmp-";

/** What the view shows of one install. */
interface Viewed {
  repo: string;
  commit: string;
  /** the model's revision when it is a branch or tag name */
  ref: string | undefined;
  installedAtMs: number;
  /** path -> sha256 */
  files: Map<string, string>;
  /** the install's dir: the view links its files */
  installDir: string;
}

/** `models--{org}--{name}` for a hub repository id, undefined for other sources. */
export function repoFolder(source: string): string | undefined {
  if (!REPO_ID.test(source) || source.includes("--") || source.includes("..")) return undefined;
  return `models--${source.replace("/", "--")}`;
}

export class HfCacheView {
  private readonly installs = new Map<string, Viewed>();
  /** repo folder -> the `dev:ino` of each of its blobs */
  private readonly linked = new Map<string, Set<string>>();
  private readonly locks = new KeyedLock();
  private readonly stopCounting: () => void;

  constructor(
    readonly dir: string,
    private readonly layout: CacheLayout,
  ) {
    this.stopCounting = countViewLinks((dev, ino) => {
      let count = 0;
      for (const inodes of this.linked.values()) if (inodes.has(`${dev}:${ino}`)) count += 1;
      return count;
    });
  }

  close(): void {
    this.stopCounting();
  }

  /** Checks DIR is on the cache root's filesystem (hard links must reach the content), creating it if need be. */
  async open(): Promise<this> {
    await mkdir(this.dir, { recursive: true }).catch((err: unknown) => {
      throw filesystemError("create the Hugging Face cache dir", this.dir, err);
    });
    const [view, root] = [await lstat(this.dir), await lstat(this.layout.root)];
    if (view.dev !== root.dev) {
      throw new ModelCacheError(
        "invalid_argument",
        `--hf-cache-dir '${this.dir}' is on another filesystem than the cache root '${this.layout.root}': the view is made of hard links to the cache's content; choose a directory on the cache root's filesystem`,
      );
    }
    return this;
  }

  /** The install of `name` is now `manifest` (in place at its dir): its view is brought in. */
  async installed(name: string, manifest: Manifest): Promise<void> {
    const before = this.installs.get(name)?.repo;
    const viewed = this.viewOf(name, manifest);
    if (viewed) this.installs.set(name, viewed);
    else this.installs.delete(name);
    for (const repo of new Set([before, viewed?.repo])) if (repo) await this.syncRepo(repo);
  }

  /** The install of `name` goes: its ref, then its snapshot, then blobs no snapshot links go first. */
  async removed(name: string): Promise<void> {
    const before = this.installs.get(name);
    if (!before) return;
    this.installs.delete(name);
    await this.syncRepo(before.repo);
  }

  /** At startup: the view of exactly these installs; anything else under DIR's repository folders goes. */
  async reconcile(installs: Map<string, Manifest>): Promise<void> {
    this.installs.clear();
    for (const [name, manifest] of installs) {
      const viewed = this.viewOf(name, manifest);
      if (viewed) this.installs.set(name, viewed);
    }
    const repos = new Set([...this.installs.values()].map((v) => v.repo));
    for (const entry of await readdir(this.dir)) if (entry.startsWith("models--")) repos.add(entry);
    for (const repo of [...repos].sort()) await this.syncRepo(repo);
  }

  private viewOf(name: string, manifest: Manifest): Viewed | undefined {
    const repo = repoFolder(manifest.source);
    if (!repo || !COMMIT.test(manifest.resolvedCommit)) return undefined;
    return {
      repo,
      commit: manifest.resolvedCommit,
      ref: COMMIT.test(manifest.revision) || manifest.revision === "" ? undefined : manifest.revision,
      installedAtMs: manifest.installedAtMs,
      files: new Map(manifest.files.filter((f) => SHA256.test(f.sha256)).map((f) => [f.path, f.sha256])),
      installDir: this.layout.modelDir(name),
    };
  }

  private syncRepo(repo: string): Promise<void> {
    return this.locks.run(repo, undefined, () => this.bringToWanted(repo));
  }

  private async bringToWanted(repo: string): Promise<void> {
    const root = join(this.dir, repo);
    const wanted = [...this.installs.values()].filter((v) => v.repo === repo);
    // commit -> path -> sha256; sha256 -> a file of an install holding it; ref -> commit
    const snapshots = new Map<string, Map<string, string>>();
    const sources = new Map<string, string>();
    const refs = new Map<string, { commit: string; at: number }>();
    for (const v of wanted) {
      const files = snapshots.get(v.commit) ?? new Map<string, string>();
      snapshots.set(v.commit, files);
      for (const [path, sha256] of v.files) {
        files.set(path, sha256);
        if (!sources.has(sha256)) sources.set(sha256, join(v.installDir, path));
      }
      const known = v.ref === undefined ? undefined : refs.get(v.ref);
      if (v.ref !== undefined && (!known || known.at < v.installedAtMs)) refs.set(v.ref, { commit: v.commit, at: v.installedAtMs });
    }
    const blobsDir = join(root, "blobs");
    const snapshotsDir = join(root, "snapshots");
    const refsDir = join(root, "refs");
    // 1. refs no install wants any more go first
    for (const ref of await listTree(refsDir)) if (!refs.has(ref)) await removeFile(join(refsDir, ref));
    if (wanted.length === 0) {
      await rm(refsDir, { recursive: true, force: true });
      await rm(snapshotsDir, { recursive: true, force: true });
      await rm(blobsDir, { recursive: true, force: true });
      await rm(root, { recursive: true, force: true });
      this.linked.delete(repo);
      return;
    }
    await mkdir(blobsDir, { recursive: true });
    await mkdir(snapshotsDir, { recursive: true });
    await mkdir(refsDir, { recursive: true });
    // 2. blobs: a hard link to the install's file (the stored content), replaced when it is another inode
    const inodes = new Set<string>();
    for (const [sha256, from] of sources) {
      const source = lstatSync(from, { throwIfNoEntry: false });
      if (!source?.isFile()) continue;
      const target = join(blobsDir, sha256);
      const present = lstatSync(target, { throwIfNoEntry: false });
      if (!sameInode(present, source)) await replaceWith(target, (temp) => link(from, temp));
      inodes.add(`${source.dev}:${source.ino}`);
    }
    this.linked.set(repo, new Set([...(this.linked.get(repo) ?? []), ...inodes]));
    // 3. snapshots: a new one whole under a temporary name; an existing one gains what it lacks
    for (const [commit, files] of snapshots) {
      const snapshot = join(snapshotsDir, commit);
      const exists = lstatSync(snapshot, { throwIfNoEntry: false })?.isDirectory() === true;
      const into = exists ? snapshot : join(snapshotsDir, `${TEMP}${commit}.${randomBytes(4).toString("hex")}`);
      for (const [path, sha256] of files) {
        const at = join(into, path);
        const target = `${"../".repeat(path.split("/").length + 1)}blobs/${sha256}`;
        // missing, or not a link: made anew below
        const current = await readlink(at).catch(() => undefined);
        if (current === target) continue;
        await mkdir(dirname(at), { recursive: true });
        await replaceWith(at, (temp) => symlink(target, temp));
      }
      if (!exists) {
        await rm(snapshot, { recursive: true, force: true });
        await rename(into, snapshot).catch((err: unknown) => {
          throw filesystemError("move a snapshot into", snapshot, err);
        });
      }
    }
    // 4. refs, after their snapshot: exactly the commit, no newline
    for (const [ref, { commit }] of refs) {
      const at = join(refsDir, ref);
      // missing or unreadable: written anew
      if ((await readFile(at, "utf8").catch(() => undefined)) === commit) continue;
      await mkdir(dirname(at), { recursive: true });
      await replaceWith(at, (temp) => writeFile(temp, commit));
    }
    // 5. snapshots and their files nothing wants, then 6. blobs no snapshot links
    for (const entry of await readdir(snapshotsDir)) {
      const files = snapshots.get(entry);
      if (!files) {
        await rm(join(snapshotsDir, entry), { recursive: true, force: true });
        continue;
      }
      for (const path of await listTree(join(snapshotsDir, entry))) if (!files.has(path)) await removeFile(join(snapshotsDir, entry, path));
      await removeEmptyDirs(join(snapshotsDir, entry), false);
    }
    for (const entry of await readdir(blobsDir)) if (!sources.has(entry)) await removeFile(join(blobsDir, entry));
    this.linked.set(repo, inodes);
  }
}

function sameInode(a: Stats | undefined, b: Stats): boolean {
  return a !== undefined && a.isFile() && a.dev === b.dev && a.ino === b.ino;
}

/** Puts what `make` creates at a temporary name next to `path` in its place with one rename. */
async function replaceWith(path: string, make: (temp: string) => Promise<unknown>): Promise<void> {
  const temp = join(dirname(path), `${TEMP}${randomBytes(6).toString("hex")}`);
  try {
    await make(temp);
    await rename(temp, path);
  } catch (err) {
    // the temporary entry is not left behind; the failure that matters is the one thrown
    await rm(temp, { force: true });
    throw filesystemError("write the Hugging Face cache entry", path, err);
  }
}

async function removeFile(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (err) {
    // gone already: what removing it wanted
    if (errorCode(err) !== "ENOENT") throw filesystemError("remove", path, err);
  }
}

/** Every non-directory below `dir`, as '/'-separated paths; none when it does not exist. */
async function listTree(dir: string, prefix = ""): Promise<string[]> {
  let entries;
  try {
    entries = await readdir(join(dir, prefix), { withFileTypes: true });
  } catch (err) {
    // no such dir: nothing in it
    if (errorCode(err) === "ENOENT") return [];
    throw filesystemError("list", join(dir, prefix), err);
  }
  const found: string[] = [];
  for (const entry of entries) {
    const path = prefix === "" ? entry.name : `${prefix}/${entry.name}`;
    if (entry.isDirectory()) found.push(...(await listTree(dir, path)));
    else found.push(path);
  }
  return found;
}

async function removeEmptyDirs(dir: string, self: boolean): Promise<void> {
  for (const entry of await readdir(dir, { withFileTypes: true })) if (entry.isDirectory()) await removeEmptyDirs(join(dir, entry.name), true);
  if (self && (await readdir(dir)).length === 0) await rmdir(dir);
}
