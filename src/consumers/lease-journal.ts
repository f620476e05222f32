// The leases' journal, <data-dir>/leases.journal: JSON lines, each batch of
// granted leases a line and each batch of endings a line, appended by one
// synchronous write(2) on the main thread. A lease is taken on the hot path of
// ResolveModel, where a LevelDB batch (its encoding, and its hand-off to the
// thread pool and back) cost a quarter of a call; one append of the leases
// granted in a turn of the event loop costs a few µs a lease (an append per
// lease would cost several times that).
//
// A line the kernel accepted survives the process's death (SIGKILL, the OOM
// killer), as an unsynced LevelDB write does; a power cut may lose the last
// lines, never the file: a torn line is skipped when the journal is read.
// The file is rewritten with only the live leases (through a synced temp file
// and a rename) when the server starts, and in the background once ended
// leases make up most of it; the lines appended while a rewrite runs are
// copied into the new file in the same synchronous step as its rename.
import { closeSync, constants, fsync, ftruncateSync, openSync, renameSync, rmSync, write, writeSync } from "node:fs";
import { open, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import { ModelCacheError, errorCode, filesystemError, isOutOfSpace, spaceShortage } from "../errors.js";
import { syncDirectory } from "../fs/durable.js";
import type { Lease } from "./lease.js";

export const LEASE_JOURNAL_FILE = "leases.journal";

/**
 * The journal's first line: the format, so a later version can tell it apart.
 * Then `{"put":[lease, ...]}` (leases granted) and `{"del":[id, ...]}` (leases
 * ended), in the order they happened; a lease is live when its last line is a
 * put and its end lies in the future.
 */
const HEADER = `${JSON.stringify({ modelcache_leases: 1 })}\n`;

/** A rewrite writes its snapshot in parts of this many leases, letting other work run between them. */
const LEASES_PER_PART = 4096;

/** A new journal file: created here (never an existing file, nor a link someone left), appended to only. */
const NEW_FILE = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_APPEND | constants.O_NOFOLLOW;

const writeAsync = promisify(write);
const fsyncAsync = promisify(fsync);

/** A rewrite comes once the file holds this many bytes more than twice its size after the last one. */
export const DEFAULT_REWRITE_SLACK_BYTES = 1024 * 1024;

/** What a read of the journal found. */
export interface JournalContents {
  /** the leases granted and not ended, expired ones included */
  leases: Lease[];
  /** lines that were not whole records (a write torn by a power cut or a full disk), skipped */
  skipped: number;
}

export interface LeaseJournalOptions {
  /** see DEFAULT_REWRITE_SLACK_BYTES */
  rewriteSlackBytes?: number;
  /** told of each background rewrite, done (with its size) or failed (the journal goes on as it was) */
  rewritten?(outcome: { bytes: number } | { failed: unknown }): void;
  now?: () => number;
}

export class LeaseJournal {
  readonly path: string;
  /** open for appending once started; undefined before and after */
  #fd: number | undefined;
  /** bytes of whole lines in the file: an append that fails is cut back to it */
  #size = 0;
  /** the size at which the next rewrite starts */
  #rewriteAt = 0;
  /** an append failed and the file could not be cut back: appends wait until it can */
  #torn: unknown;
  /** the leases written and not ended, as the owner of the journal knows them: what a rewrite keeps */
  #written: () => Iterable<Lease> = () => [];
  #rewriting: Promise<boolean> | undefined;
  /** set when close begins: no rewrite starts from then on */
  #closing = false;
  /** the lines appended since the running rewrite took its snapshot */
  #appendedDuringRewrite: Buffer[] = [];
  readonly #slack: number;
  readonly #now: () => number;

  constructor(
    dataDir: string,
    private readonly options: LeaseJournalOptions = {},
  ) {
    this.path = join(dataDir, LEASE_JOURNAL_FILE);
    this.#slack = options.rewriteSlackBytes ?? DEFAULT_REWRITE_SLACK_BYTES;
    this.#now = options.now ?? Date.now;
  }

  /** Reads the journal as the last run left it (nothing when there is none), line by line. */
  async read(): Promise<JournalContents> {
    const leases = new Map<string, Lease>();
    let skipped = 0;
    let first = true;
    const take = (line: string) => {
      if (first) {
        first = false;
        if (isHeader(this.path, line)) return;
      }
      const record = parseRecord(line);
      if (record === undefined) skipped += 1;
      else if ("put" in record) for (const lease of record.put) leases.set(lease.id, lease);
      else for (const id of record.del) leases.delete(id);
    };
    let rest = "";
    try {
      const handle = await open(this.path, constants.O_RDONLY | constants.O_NOFOLLOW);
      // the stream closes the file when it ends or fails
      for await (const chunk of handle.createReadStream({ encoding: "utf8" })) {
        const lines = (rest + (chunk as string)).split("\n");
        rest = lines.pop()!;
        lines.forEach(take);
      }
    } catch (err) {
      if (errorCode(err) === "ENOENT") return { leases: [], skipped: 0 };
      if (err instanceof ModelCacheError) throw err;
      throw filesystemError("read the lease journal", this.path, err);
    }
    // the text after the last newline is a line whose write did not finish
    if (rest !== "") skipped += 1;
    return { leases: [...leases.values()], skipped };
  }

  /**
   * Writes the journal anew with `leases` alone, durably (a temp file synced,
   * renamed over the old one, the directory synced), and opens it for
   * appending. A temp file a killed rewrite left is replaced. `written` tells
   * each later rewrite which leases are written and not ended.
   */
  async start(leases: Lease[], written: () => Iterable<Lease>): Promise<void> {
    if (this.#fd !== undefined || this.#closing) throw new Error(`the lease journal '${this.path}' was started already`);
    this.#written = written;
    const { fd, bytes } = await this.#writeTemp(leases);
    try {
      renameSync(this.#temp, this.path);
    } catch (err) {
      closeSync(fd);
      throw filesystemError("rename the new lease journal into", this.path, err);
    }
    this.#fd = fd;
    this.#size = bytes;
    this.#rewriteAt = 2 * this.#size + this.#slack;
    await syncDirectory(dirname(this.path));
  }

  /** Appends the grant of each lease, in one line (kept or lost whole); throws (and the journal is as before) when the write fails. */
  put(leases: Lease[]): void {
    if (leases.length > 0) this.#append(putLine(leases));
  }

  /** Appends the end of each lease; throws (and the journal is as before) when the write fails. */
  remove(ids: string[]): void {
    if (ids.length > 0) this.#append(`${JSON.stringify({ del: ids })}\n`);
  }

  /**
   * Rewrites the journal with its live leases now (the background rewrite,
   * for a caller that wants it at once); false when it did not, as the
   * journal is closing.
   */
  rewrite(): Promise<boolean> {
    if (this.#closing || this.#fd === undefined) return Promise.resolve(false);
    this.#rewriting ??= this.#rewrite().finally(() => (this.#rewriting = undefined));
    return this.#rewriting;
  }

  /** Waits for a rewrite under way, if any, to end (a failed one is told to whoever asked for it: rewrite's caller, or options.rewritten). */
  async idle(): Promise<void> {
    await this.#rewriting?.catch(() => undefined);
  }

  /** Waits for a rewrite under way (none starts from here on), then closes the file; appends after it are refused. */
  async close(): Promise<void> {
    this.#closing = true;
    await this.idle();
    const fd = this.#fd;
    this.#fd = undefined;
    if (fd !== undefined) closeSync(fd);
  }

  /** The file's size in bytes (whole lines). */
  get bytes(): number {
    return this.#size;
  }

  #append(text: string): void {
    const fd = this.#fd;
    if (fd === undefined) throw new ModelCacheError("unavailable", `the lease journal '${this.path}' is closed: the server is stopping`);
    if (this.#torn !== undefined) this.#cutBack(fd, this.#torn);
    const bytes = Buffer.from(text);
    try {
      writeAll(fd, bytes);
    } catch (err) {
      // a part of the lines may be in the file: they go, so the next append starts a line of its own
      this.#cutBack(fd, err);
      throw this.#writeError(err);
    }
    this.#size += bytes.length;
    if (!this.#rewriting && this.#size > this.#rewriteAt) {
      this.rewrite().then(
        (rewritten) => (rewritten ? this.options.rewritten?.({ bytes: this.#size }) : undefined),
        (err: unknown) => {
          // tried again once as many bytes more are appended, not at every append (a rewrite that
          // switched files and failed after has set the next point already)
          this.#rewriteAt = Math.max(this.#rewriteAt, this.#size + this.#slack);
          this.options.rewritten?.({ failed: err });
        },
      );
    }
    // the rewrite's snapshot is taken at once, before the caller has forgotten the leases these
    // lines end: they are replayed after it, as every line appended while it runs
    if (this.#rewriting) this.#appendedDuringRewrite.push(bytes);
  }

  /** Cuts the file back to its whole lines; while it cannot, the journal is torn and refuses appends. */
  #cutBack(fd: number, cause: unknown): void {
    try {
      ftruncateSync(fd, this.#size);
      this.#torn = undefined;
    } catch (err) {
      this.#torn = cause;
      throw new ModelCacheError(
        "unavailable",
        `the lease journal '${this.path}' could not be cut back to its last whole line after a failed write (${describe(cause)}): ${describe(err)}; nothing was changed: retry later, or restart the server`,
        { cause: err },
      );
    }
  }

  /** the temp file each new journal is written to before its rename */
  get #temp(): string {
    return `${this.path}.tmp`;
  }

  /**
   * Writes a new journal of `leases` to the temp file and syncs it, in parts
   * (other work runs between them); returns its descriptor, open for
   * appending, and its size. A temp file a killed server left is removed
   * first, whatever it is.
   */
  async #writeTemp(leases: Iterable<Lease>): Promise<{ fd: number; bytes: number }> {
    await rm(this.#temp, { force: true });
    const fd = openSync(this.#temp, NEW_FILE, 0o600);
    try {
      const now = this.#now();
      let text = HEADER;
      let bytes = 0;
      let count = 0;
      for (const lease of leases) {
        // an expired lease is dead whether its end was written or not: it goes here
        if (lease.expiresAtMs <= now) continue;
        text += putLine([lease]);
        if (++count % LEASES_PER_PART === 0) {
          bytes += await writeAllAsync(fd, text);
          text = "";
        }
      }
      bytes += await writeAllAsync(fd, text);
      await fsyncAsync(fd);
      return { fd, bytes };
    } catch (err) {
      closeSync(fd);
      await rm(this.#temp, { force: true });
      throw err;
    }
  }

  /** Writes the live leases to a new file and swaps it in; false when the journal began closing meanwhile. */
  async #rewrite(): Promise<boolean> {
    this.#appendedDuringRewrite = [];
    // the leases as they are now (each lease is never changed): encoded and written in parts after
    const snapshot = [...this.#written()];
    let written: { fd: number; bytes: number };
    try {
      written = await this.#writeTemp(snapshot);
    } catch (err) {
      this.#appendedDuringRewrite = [];
      throw err;
    }
    const { fd } = written;
    const appended = Buffer.concat(this.#appendedDuringRewrite);
    this.#appendedDuringRewrite = [];
    const old = this.#fd;
    if (old === undefined || this.#closing) {
      // closing: the journal stays as it was
      closeSync(fd);
      await rm(this.#temp, { force: true });
      return false;
    }
    // from here to the switch of files, synchronously: no append can come between
    try {
      writeAll(fd, appended);
      renameSync(this.#temp, this.path);
    } catch (err) {
      closeSync(fd);
      // the old file is whole and still in use; a temp file left here is removed by the next rewrite
      rmSync(this.#temp, { force: true });
      throw err;
    }
    this.#fd = fd;
    this.#size = written.bytes + appended.length;
    this.#rewriteAt = 2 * this.#size + this.#slack;
    // the old file's torn tail, if any, went with it
    this.#torn = undefined;
    try {
      closeSync(old);
    } finally {
      // the rename is durable once the directory is synced, whatever the close of the old file said
      await syncDirectory(dirname(this.path));
    }
    return true;
  }

  #writeError(err: unknown): ModelCacheError {
    if (isOutOfSpace(err)) {
      return new ModelCacheError(
        "resource_exhausted",
        `the lease journal '${this.path}' could not be written: ${spaceShortage(err)}; nothing was changed: free space on that filesystem and retry`,
        { cause: err },
      );
    }
    return new ModelCacheError("internal", `the lease journal '${this.path}' could not be written: ${describe(err)}; nothing was changed: retry, or restart the server`, { cause: err });
  }
}

function putLine(leases: Lease[]): string {
  return `{"put":${JSON.stringify(leases)}}\n`;
}

type JournalRecord = { put: Lease[] } | { del: string[] };

/**
 * Whether the first line is the header of this format; throws when it names
 * another (a later version wrote the journal, and this one must not rewrite
 * it). A first line that is no header is read as any other line.
 */
function isHeader(path: string, line: string): boolean {
  let format: unknown;
  try {
    format = (JSON.parse(line) as { modelcache_leases?: unknown } | null)?.modelcache_leases;
  } catch {
    // not a header at all: a garbled first line, skipped as any other
    return false;
  }
  if (format === undefined) return false;
  if (format === 1) return true;
  throw new ModelCacheError("failed_precondition", `the lease journal '${path}' is in format ${JSON.stringify(format)}, which this version of modelcache does not read: run the version that wrote it, or remove the file to forget every lease`);
}

/** A line as a record, or undefined when it is not a whole one. */
function parseRecord(line: string): JournalRecord | undefined {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    // a torn or garbled line: the caller counts it as skipped
    return undefined;
  }
  if (typeof value !== "object" || value === null) return undefined;
  const { put, del } = value as { put?: unknown; del?: unknown };
  if (put !== undefined) return Array.isArray(put) && put.every(isLease) ? { put } : undefined;
  if (Array.isArray(del) && del.every((id) => typeof id === "string")) return { del };
  return undefined;
}

function isLease(value: unknown): value is Lease {
  const lease = value as Partial<Lease> | null;
  return (
    typeof lease === "object" &&
    lease !== null &&
    typeof lease.id === "string" &&
    typeof lease.name === "string" &&
    Number.isFinite(lease.grantedAtMs) &&
    Number.isFinite(lease.expiresAtMs) &&
    (lease.holder === undefined || typeof lease.holder === "string")
  );
}

function writeAll(fd: number, bytes: Buffer): void {
  for (let written = 0; written < bytes.length; ) written += writeSync(fd, bytes, written);
}

/** Writes all of `text` at the file's end; returns its size in bytes. */
async function writeAllAsync(fd: number, text: string): Promise<number> {
  const bytes = Buffer.from(text);
  for (let written = 0; written < bytes.length; ) written += (await writeAsync(fd, bytes, written, bytes.length - written, null)).bytesWritten;
  return bytes.length;
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
