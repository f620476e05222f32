// The content store: every distinct file's content once, under
// <cache-root>/.blobs/sha256/<64 hex>, shared by every install through hard
// links, as containerd keeps content: written under a temporary name in
// this process's area of .blobs/ingest/, hashed, synced, then renamed into
// place (servers sharing the cache root each have their own area). A blob's
// references are its link count minus one (installs, staging dirs of running
// pulls, parked installs), so what the disk shows is the whole truth about
// what is in use; a crash leaves at most blobs with one link, which nothing
// references and PruneCache removes.
// What the store knows about each blob (its size, the git blob id a hub gave
// for it, when it was last hashed and the stat signature its own last
// operation left) is kept in the registry's `blobs` sublevel; when it is
// missing the blob is hashed again before it is reused.
import { randomBytes } from "node:crypto";
import type { BigIntStats } from "node:fs";
import { lstat, mkdir, readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { KeyedLock } from "../concurrency/keyed-lock.js";
import { ModelCacheError, errorCode, filesystemError } from "../errors.js";
import { probeHardLinks } from "./probe-hard-links.js";

export const SHA256 = /^[0-9a-f]{64}$/;

/** Content found corrupt: its inode, and where it was quarantined (unless the store's name held another inode by then). */
export interface Condemned {
  sha256: string;
  ino: bigint;
  sizeBytes: number;
  quarantined?: string;
}

/** What the store knows about one blob. */
export interface KnownContent {
  sizeBytes: number;
  /** the git blob id of the content, when a hub listed one that the download matched */
  gitBlobId?: string;
  hashedAtMs: number;
  /** the blob's lstat signature after the store's own last operation on it */
  signature: string;
}

/** Where the store keeps what it knows: a LevelDB sublevel, or a Map in tests. */
export interface Table<V> {
  get(key: string): Promise<V | undefined>;
  put(key: string, value: V): Promise<void>;
  del(key: string): Promise<void>;
}

export function memoryTable<V>(): Table<V> {
  const map = new Map<string, V>();
  return {
    get: async (key) => map.get(key),
    put: async (key, value) => void map.set(key, value),
    del: async (key) => void map.delete(key),
  };
}

/**
 * Size, mtime, ctime and inode, to the nanosecond. A write can put size and
 * mtime back but not ctime, and every link or unlink changes ctime too: the
 * store records the signature each of its own operations leaves, and any
 * other change means the content must be hashed again before it is trusted.
 */
export function signatureOf(stats: BigIntStats): string {
  return `${stats.size}:${stats.mtimeNs}:${stats.ctimeNs}:${stats.ino}`;
}

/**
 * Takes the cross-process lock of an ingest area at once: its release, or
 * undefined when a live process holds it (a dead holder's is taken over).
 */
export type AreaLocks = (id: string) => Promise<(() => Promise<void>) | undefined>;

export class ContentStore {
  readonly dir: string;
  readonly blobsDir: string;
  readonly ingestDir: string;
  /** content found corrupt, moved out of the store's names while installs may still link it: <sha256>.<inode> */
  readonly quarantineDir: string;
  /** one operation per blob at a time: a check and the link that relies on it, or a collection */
  readonly locks = new KeyedLock();
  /** how many blobs have each size: a local file is hashed before it is copied only when the store may hold its content */
  private readonly sizes = new Map<number, number>();
  /** ingest files being written by this process: PruneCache leaves them alone */
  readonly ingesting = new Set<string>();
  /** content admitted pulls count on linking (sha256 -> holders): releasing an install or collecting garbage leaves it */
  private readonly holds = new Map<string, number>();
  /**
   * This process's own area under the ingest dir: servers sharing the cache
   * root each write under their own, held by a cross-process lock for their
   * life, so none removes what another is writing.
   */
  readonly ingestId = randomBytes(12).toString("hex");
  readonly ingestArea: string;
  private releaseArea: (() => Promise<void>) | undefined;
  /** `<sha256>:<inode>` of content condemned while this process ran, until its last link goes */
  private readonly condemned = new Set<string>();
  /** told of every content condemned (see onCondemned) */
  readonly condemnListeners: ((condemned: Condemned) => Promise<void>)[] = [];

  constructor(
    readonly cacheRoot: string,
    readonly known: Table<KnownContent> = memoryTable(),
    /** git blob id -> sha256 */
    readonly blobIds: Table<string> = memoryTable(),
    /** the ingest areas' locks, shared with the other processes on the cache root; without them, every area is this process's to clear */
    readonly areaLocks: AreaLocks = async () => async () => undefined,
  ) {
    this.dir = join(cacheRoot, ".blobs");
    this.blobsDir = join(this.dir, "sha256");
    this.ingestDir = join(this.dir, "ingest");
    this.ingestArea = join(this.ingestDir, this.ingestId);
    this.quarantineDir = join(this.dir, "quarantine");
  }

  /** Creates the store's directories, checks that its filesystem has hard links, takes this process's ingest area and learns the sizes of the blobs on disk. */
  async open(): Promise<this> {
    await mkdir(this.blobsDir, { recursive: true });
    await mkdir(this.ingestDir, { recursive: true });
    await probeHardLinks(this.ingestDir, this.cacheRoot);
    // the lock before the dir: a process clearing dead areas never takes a new one for dead
    const release = await this.areaLocks(this.ingestId);
    // a fresh id: nobody else can hold it
    if (!release) throw new ModelCacheError("internal", `the lock of the new ingest area '${this.ingestArea}' is held already`);
    this.releaseArea = release;
    try {
      await mkdir(this.ingestArea, { recursive: true });
      await this.learnSizes();
    } catch (err) {
      await this.close();
      throw err;
    }
    return this;
  }

  /** Once nothing of this process writes in its ingest area any more: removes the area and lets go of its lock. */
  async close(): Promise<void> {
    const release = this.releaseArea;
    this.releaseArea = undefined;
    if (!release) return;
    try {
      await rm(this.ingestArea, { recursive: true, force: true });
    } finally {
      await release();
    }
  }

  private async learnSizes(): Promise<void> {
    for (const name of await readdir(this.blobsDir)) {
      if (!SHA256.test(name)) continue;
      const stats = await lstat(join(this.blobsDir, name)).catch((err: unknown) => {
        // removed since it was listed
        if (errorCode(err) === "ENOENT") return undefined;
        throw filesystemError("read", join(this.blobsDir, name), err);
      });
      if (stats?.isFile()) this.countSize(stats.size, 1);
    }
  }

  blobPath(sha256: string): string {
    if (!SHA256.test(sha256)) throw new ModelCacheError("internal", `'${sha256}' is not a sha256 digest`);
    return join(this.blobsDir, sha256);
  }

  /** A fresh name in this process's ingest area for content on its way in (or, with a prefix, aside). */
  ingestPath(prefix = ""): string {
    return join(this.ingestArea, `${prefix}${randomBytes(12).toString("hex")}`);
  }

  /** Whether some blob has this size (cheap: no disk access). */
  mayHoldSize(sizeBytes: number): boolean {
    return (this.sizes.get(sizeBytes) ?? 0) > 0;
  }

  countSize(sizeBytes: number, delta: 1 | -1): void {
    const count = (this.sizes.get(sizeBytes) ?? 0) + delta;
    if (count > 0) this.sizes.set(sizeBytes, count);
    else this.sizes.delete(sizeBytes);
  }

  /** Keeps `sha256s` from being released or collected until the returned function is called. */
  hold(sha256s: Iterable<string>): () => void {
    const held = [...new Set(sha256s)];
    for (const sha256 of held) this.holds.set(sha256, (this.holds.get(sha256) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      for (const sha256 of held) {
        const count = (this.holds.get(sha256) ?? 0) - 1;
        if (count > 0) this.holds.set(sha256, count);
        else this.holds.delete(sha256);
      }
    };
  }

  /** Whether an admitted pull counts on linking this content. */
  isHeld(sha256: string): boolean {
    return this.holds.has(sha256);
  }

  /** Whether the inode holding this content was condemned (a running pull checks what it staged). */
  isCondemned(sha256: string, ino: bigint): boolean {
    return this.condemned.size > 0 && this.condemned.has(`${sha256}:${ino}`);
  }

  /** Whether anything was condemned while this process ran and may still be linked. */
  get anyCondemned(): boolean {
    return this.condemned.size > 0;
  }

  /** Remembers a condemned inode, or (`held` false) forgets it once nothing links it. */
  markCondemned(sha256: string, ino: bigint, held = true): void {
    if (held) this.condemned.add(`${sha256}:${ino}`);
    else this.condemned.delete(`${sha256}:${ino}`);
  }

  /** Told of every content condemned, whoever found it: marks the installs that hold it, repairs them. */
  onCondemned(listener: (condemned: Condemned) => Promise<void>): void {
    this.condemnListeners.push(listener);
  }

  /** Drops what the store knew of a blob. */
  async forget(sha256: string): Promise<void> {
    const known = await this.known.get(sha256);
    if (known?.gitBlobId) await this.blobIds.del(known.gitBlobId);
    await this.known.del(sha256);
  }

  /** Runs `work` holding the blob's lock. */
  async withBlob<T>(sha256: string, signal: AbortSignal | undefined, work: () => Promise<T>): Promise<T> {
    const release = await this.locks.acquire(sha256, signal);
    try {
      return await work();
    } finally {
      release();
    }
  }
}

/** lstat with nanosecond times, or undefined when nothing is there. */
export async function statBlob(path: string): Promise<BigIntStats | undefined> {
  try {
    return await lstat(path, { bigint: true });
  } catch (err) {
    if (errorCode(err) === "ENOENT") return undefined;
    throw filesystemError("read", path, err);
  }
}

