// The registry's LevelDB, which never acknowledges a write it can lose. When a
// write fails (a full disk, above all), LevelDB leaves a torn record in its log
// and goes on appending after it: those later writes succeed, and are dropped
// as "checksum mismatch" when the log is next recovered. So here writes run one
// at a time, and after a failed one the database is closed and opened again
// (which recovers the log into a fresh one) before any other write is accepted.
import { readdir, stat, statfs } from "node:fs/promises";
import { join } from "node:path";
import { Mutex } from "async-mutex";
import { Level } from "level";
import { ModelCacheError, isOutOfSpace, spaceShortage } from "../errors.js";

/**
 * Room a reopen needs beyond the size of the log it recovers: LevelDB writes
 * the recovered entries into a table, then a new log and a new manifest.
 */
const REOPEN_MARGIN_BYTES = 1024 * 1024;

/** The methods of classic-level and abstract-level that this class wraps (their types leave them out). */
interface Storage {
  _open(options: unknown): Promise<void>;
  _close(): Promise<void>;
  _put(key: unknown, value: unknown, options: unknown): Promise<void>;
  _del(key: unknown, options: unknown): Promise<void>;
  _batch(operations: unknown, options: unknown): Promise<void>;
  _clear(options: unknown): Promise<void>;
  _chainedBatch(): unknown;
  _get(key: unknown, options: unknown): Promise<unknown>;
  _getSync(key: unknown, options: unknown): unknown;
  _getMany(keys: unknown, options: unknown): Promise<unknown>;
  _has(key: unknown, options: unknown): Promise<unknown>;
  _hasMany(keys: unknown, options: unknown): Promise<unknown>;
  _iterator(options: unknown): Closable;
  detachResource(resource: unknown): void;
  compactRange(start: string, end: string): Promise<void>;
}
interface Closable {
  close(): Promise<void>;
}

const classic = Level.prototype as unknown as Storage;
// abstract-level's chained batch turns into one _batch call, so it passes the guard too
const abstract = Object.getPrototypeOf(Level.prototype) as Storage;

/**
 * A `Level` whose every write to disk passes one guard. Sublevels forward
 * their puts, deletes and batches to this database, and their iterators and
 * clears to it as well, so the guard sees every operation of the registry.
 */
export class RegistryDatabase extends Level<string, unknown> {
  readonly #location: string;
  /** the options of the first open, used again by each reopen */
  #openOptions: unknown;
  /** one write at a time: a write that starts after one failed must find the database reopened */
  readonly #writes = new Mutex();
  /** the failed write that calls for a reopen before the next write */
  #failed: unknown;
  /** LevelDB is closed underneath: a reopen closed it and could not open it again */
  #closedUnder = false;
  /** set once close began: no read or write may open LevelDB again under a closed database */
  #closing = false;
  /** set while a reopen runs: reads wait for it */
  #reopening: Promise<void> | undefined;
  #reads = 0;
  #readsDone: (() => void) | undefined;
  /** iterators open on LevelDB, closed by a reopen (LevelDB cannot close under them) */
  readonly #iterators = new Set<Closable>();
  /** keys (as stored, sublevel prefix and all) with a write in flight; undefined: a clear or a reopen, every key */
  readonly #writing = new Map<string | undefined, number>();
  /** told of each key a write is about to change and has changed (undefined: any key may have) */
  readonly #changeListeners = new Set<(key: string | undefined) => void>();

  constructor(location: string, options: { valueEncoding: "json" }) {
    super(location, options);
    this.#location = location;
  }

  /** Whether a synchronous read can be answered now (not while a reopen runs): else read asynchronously, which waits. */
  get readableSync(): boolean {
    return this.#reopening === undefined && !this.#closedUnder;
  }

  // --- the storage methods abstract-level calls (after it has encoded keys and values)

  async _open(options: unknown): Promise<void> {
    this.#openOptions = options;
    await classic._open.call(this, options);
    this.#closedUnder = false;
  }

  async _close(): Promise<void> {
    this.#closing = true;
    await this.#writes.runExclusive(async () => {
      await this.#idleReads();
      if (!this.#closedUnder) await classic._close.call(this);
    });
  }

  _put(key: unknown, value: unknown, options: unknown): Promise<void> {
    return this.#write([key], () => classic._put.call(this, key, value, options));
  }

  _del(key: unknown, options: unknown): Promise<void> {
    return this.#write([key], () => classic._del.call(this, key, options));
  }

  _batch(operations: unknown, options: unknown): Promise<void> {
    const keys = Array.isArray(operations) ? operations.map((operation: { key?: unknown }) => operation.key) : [undefined];
    return this.#write(keys, () => classic._batch.call(this, operations, options));
  }

  _clear(options: unknown): Promise<void> {
    return this.#write([undefined], () => classic._clear.call(this, options));
  }

  // --- what caches above the database need to stay true

  /** Calls `listener` with each key a write is about to change and has changed (undefined: any key); returns the unsubscribe. */
  onChange(listener: (key: string | undefined) => void): () => void {
    this.#changeListeners.add(listener);
    return () => this.#changeListeners.delete(listener);
  }

  /** Whether a value read of `key` now could be outdated by a write in flight (or a reopen): then it must not be remembered. */
  isChanging(key: string): boolean {
    return this.#writing.size > 0 && (this.#writing.has(key) || this.#writing.has(undefined));
  }

  #beginChange(keys: (string | undefined)[]): void {
    for (const key of keys) this.#writing.set(key, (this.#writing.get(key) ?? 0) + 1);
    this.#tell(keys);
  }

  #endChange(keys: (string | undefined)[]): void {
    for (const key of keys) {
      const left = this.#writing.get(key)! - 1;
      if (left === 0) this.#writing.delete(key);
      else this.#writing.set(key, left);
    }
    this.#tell(keys);
  }

  #tell(keys: (string | undefined)[]): void {
    for (const listener of this.#changeListeners) for (const key of keys) listener(key);
  }

  _chainedBatch(): unknown {
    return abstract._chainedBatch.call(this);
  }

  _get(key: unknown, options: unknown): Promise<unknown> {
    return this.#read(() => classic._get.call(this, key, options));
  }

  _getMany(keys: unknown, options: unknown): Promise<unknown> {
    return this.#read(() => classic._getMany.call(this, keys, options));
  }

  _has(key: unknown, options: unknown): Promise<unknown> {
    return this.#read(() => classic._has.call(this, key, options));
  }

  _hasMany(keys: unknown, options: unknown): Promise<unknown> {
    return this.#read(() => classic._hasMany.call(this, keys, options));
  }

  _getSync(key: unknown, options: unknown): unknown {
    // cannot wait for a reopen: says so instead (readableSync tells a caller to read asynchronously)
    this.#assertReadable();
    return classic._getSync.call(this, key, options);
  }

  _iterator(options: unknown): Closable {
    // made synchronously, so it cannot wait for a reopen (a few milliseconds after a failed write): UNAVAILABLE, which clients retry
    this.#assertReadable();
    const iterator = classic._iterator.call(this, options);
    this.#iterators.add(iterator);
    return iterator;
  }

  _snapshot(): never {
    // a snapshot would pin LevelDB's handle across a reopen; the registry takes none
    throw new ModelCacheError("internal", "the registry does not take explicit snapshots");
  }

  override detachResource(resource: unknown): void {
    this.#iterators.delete(resource as Closable);
    classic.detachResource.call(this, resource);
  }

  /** Compaction writes tables, so it is a write like any other. */
  compactRange(start: string, end: string): Promise<void> {
    // no key changes value
    return this.#write([], () => classic.compactRange.call(this, start, end));
  }

  // --- the guard

  /** Runs a write of `keys` (undefined: any key), telling the change listeners before it starts and once it ended, however it ended. */
  async #write<T>(keys: unknown[], run: () => Promise<T>): Promise<T> {
    // a key stored as bytes cannot be told apart: any key
    const changed = keys.map((key) => (typeof key === "string" ? key : undefined));
    this.#beginChange(changed);
    try {
      return await this.#exclusiveWrite(run);
    } finally {
      this.#endChange(changed);
    }
  }

  #exclusiveWrite<T>(run: () => Promise<T>): Promise<T> {
    return this.#writes.runExclusive(async () => {
      if (this.#failed !== undefined || this.#closedUnder) await this.#reopen();
      try {
        return await run();
      } catch (err) {
        // whatever LevelDB failed on, its log may now end in a torn record
        this.#failed = err;
        throw this.#writeError(err);
      }
    });
  }

  async #read<T>(run: () => Promise<T>): Promise<T> {
    for (;;) {
      while (this.#reopening) await this.#reopening;
      if (!this.#closedUnder) break;
      if (this.#closing) throw this.#closed();
      // the last reopen failed: try again (it takes the writes' turn), else say why
      await this.#writes.runExclusive(() => (this.#closedUnder ? this.#reopen() : undefined));
    }
    // counted with no await since the checks above, so a reopen starting now waits for this read
    this.#reads += 1;
    try {
      return await run();
    } finally {
      this.#reads -= 1;
      if (this.#reads === 0) this.#readsDone?.();
    }
  }

  #assertReadable(): void {
    if (this.#reopening || this.#closedUnder) {
      throw new ModelCacheError("unavailable", `the registry at '${this.#location}' is being reopened after a failed write; try again in a moment`);
    }
  }

  async #idleReads(): Promise<void> {
    while (this.#reads > 0) await new Promise<void>((done) => (this.#readsDone = done));
    this.#readsDone = undefined;
  }

  /** Closes LevelDB and opens it again, which recovers its log; called with the writes' lock held. */
  async #reopen(): Promise<void> {
    if (this.#closing) throw this.#closed();
    if (!this.#closedUnder) {
      // closing when the disk cannot hold the recovery would leave nothing to read from:
      // keep serving reads from the open database and refuse writes until there is room
      const { free, needed } = await this.#room();
      if (free < needed) throw this.#refusal(`its filesystem has ${free} bytes free and reopening needs ${needed}`);
    }
    let opened!: () => void;
    this.#reopening = new Promise<void>((done) => (opened = done));
    // what a failed write left may or may not be recovered: nothing read before holds
    this.#beginChange([undefined]);
    try {
      await this.#idleReads();
      // an iterator left open across a failed write ends here; its next read fails
      await Promise.all([...this.#iterators].map((iterator) => iterator.close()));
      if (!this.#closedUnder) {
        this.#closedUnder = true;
        await classic._close.call(this);
      }
      await classic._open.call(this, this.#openOptions);
      this.#closedUnder = false;
      this.#failed = undefined;
    } catch (err) {
      throw this.#refusal(`reopening it failed: ${describe(err)}`, err);
    } finally {
      this.#reopening = undefined;
      this.#endChange([undefined]);
      opened();
    }
  }

  /** The free space of the registry's filesystem, and what a reopen needs: its logs and a margin. */
  async #room(): Promise<{ free: number; needed: number }> {
    let logs = 0;
    for (const name of await readdir(this.#location)) {
      if (name.endsWith(".log")) logs += (await stat(join(this.#location, name))).size;
    }
    const fs = await statfs(this.#location);
    return { free: fs.bavail * fs.bsize, needed: logs + REOPEN_MARGIN_BYTES };
  }

  #writeError(err: unknown): ModelCacheError {
    if (isOutOfSpace(err)) {
      return new ModelCacheError(
        "resource_exhausted",
        `the registry at '${this.#location}' could not write: ${spaceShortage(err)}; nothing was changed: free space on that filesystem and retry`,
        { cause: err },
      );
    }
    // a write that failed on anything but space (a failed fsync, say) may still be in the log the reopen replays
    return new ModelCacheError("internal", `the registry at '${this.#location}' could not write: ${describe(err)}; the change may or may not have been kept: read it back before retrying`, { cause: err });
  }

  #closed(): ModelCacheError {
    return new ModelCacheError("unavailable", `the registry at '${this.#location}' is closing: the server is stopping`);
  }

  #refusal(why: string, cause?: unknown): ModelCacheError {
    const full = isOutOfSpace(this.#failed) || isOutOfSpace(cause) || cause === undefined;
    return new ModelCacheError(
      full ? "resource_exhausted" : "unavailable",
      `the registry at '${this.#location}' accepts no write until it is reopened after a failed write (${describe(this.#failed)}), and ${why}: ${full ? "free space on that filesystem and retry" : "retry later, or restart the server"}`,
      { cause: cause ?? this.#failed },
    );
  }
}

function describe(err: unknown): string {
  if (err === undefined) return "none";
  const cause = (err as { cause?: unknown }).cause;
  const message = err instanceof Error ? err.message : String(err);
  return cause instanceof Error && cause.message !== message ? `${message}: ${cause.message}` : message;
}
