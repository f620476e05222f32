// Downloads one file of a pinned commit into its resumable partial file:
// an interrupted transfer (dropped connection, cancelled pull, restarted
// server) goes on from the bytes already on disk with a Range request, and
// starts over only when the hub ignores Range. The bytes are hashed as they
// arrive (an LFS file's sha256 on the hashing thread, which reads them back
// as they are written; a file not in LFS here, sha256 and git blob sha1) and checked
// against the hub's listing; a mismatch removes the partial and fails. When
// some of the bytes came from an earlier attempt, the mismatch may be theirs
// (a crash before they reached the disk), so the file is fetched once more
// from zero before the hub is blamed.
import { createHash, type Hash } from "node:crypto";
import { mkdir, open, rm, stat, truncate } from "node:fs/promises";
import { dirname } from "node:path";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { readFileChunks } from "../../cache/read-file-chunks.js";
import { HashBehind, hashWhole, stopFlag } from "../../cache/hash-behind.js";
import { ReadBackAround, closeHash, finishHash } from "../../cache/read-back-around.js";
import { closeBeside, openDirectBeside } from "../../cache/direct-writes.js";
import { type FileSync, Writeback } from "../../cache/writeback.js";
import { ModelCacheError, filesystemError, isOutOfSpace } from "../../errors.js";
import type { RateCap } from "./bandwidth.js";
import type { Readable } from "node:stream";

/** Ranged GETs with retries until a response starts: the hub's HTTP client, or an object store's. */
export interface RangeReader {
  get(url: string, what: string, signal: AbortSignal, range?: number, rangeEnd?: number): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Readable }>;
  /** the wait before retry `attempt + 1` */
  backoff(attempt: number): number;
}

export interface DownloadOptions {
  http: RangeReader;
  /** how the source reads in messages; "the hub" unless given */
  origin?: string;
  url: string;
  /** the file's path in the repo, for messages */
  path: string;
  partialPath: string;
  sizeBytes: number;
  /** from the listing: sha256 for LFS files, git blob id for the others */
  sha256?: string;
  gitBlobId?: string;
  bandwidth?: RateCap;
  signal: AbortSignal;
  /** bytes newly accounted for; never more than sizeBytes in all */
  onBytes(bytes: number): void;
  /** how the partial is made durable (the real fsync unless a caller must see it fail) */
  sync?: FileSync;
  /**
   * false: every write goes through the page cache, for a filesystem that
   * takes O_DIRECT but is slow with it (NFS, some FUSE filesystems); else
   * written around it where the filesystem takes it (direct-writes.ts)
   */
  directWrites?: boolean;
}

const MAX_FAILURES = 5;

/** The verified file's sha256, once it is whole in `partialPath`. */
export async function downloadFile(options: DownloadOptions): Promise<string> {
  const { partialPath } = options;
  await mkdir(dirname(partialPath), { recursive: true });
  let reported = 0;
  // after a restart from zero, progress resumes once it passes what was already told
  const report = (done: number) => {
    if (done > reported) {
      options.onBytes(done - reported);
      reported = done;
    }
  };
  const kept = (await stat(partialPath).catch(() => undefined))?.size ?? 0;
  let digests = await fetchFile(options, report);
  let mismatch = check(options, digests);
  if (mismatch && kept > 0) {
    await rm(partialPath, { force: true });
    digests = await fetchFile(options, report);
    mismatch = check(options, digests);
  }
  if (mismatch) {
    await rm(partialPath, { force: true });
    throw new ModelCacheError("data_loss", `file '${options.path}' from ${origin(options)} does not match its listing: its bytes have ${mismatch}; nothing was installed`);
  }
  return digests.sha256;
}

/** The digests of a whole file: its sha256, and its git blob id when the listing gives one to check. */
interface Digests {
  sha256: string;
  gitBlobId?: string;
}

/**
 * Fetches what `partialPath` lacks; returns the digests of the whole file, not
 * yet checked. A file checked by sha256 alone (an LFS file) is hashed on the
 * hashing thread, which reads the bytes back as they are written (the bytes
 * kept from an earlier attempt first), so the main thread only receives them;
 * one checked by its git blob id is hashed here as its bytes arrive.
 */
async function fetchFile(options: DownloadOptions, report: (done: number) => void): Promise<Digests> {
  const { http, partialPath, sizeBytes, signal } = options;
  for (let failures = 0; ; ) {
    // every attempt starts from what is on disk, hashed again
    let have = (await stat(partialPath).catch(() => undefined))?.size ?? 0;
    if (have > sizeBytes) {
      await truncate(partialPath, 0);
      have = 0;
    }
    const behind = options.gitBlobId === undefined;
    let hashes = behind ? [] : await hashPrefix(partialPath, have, sizeBytes, true, signal);
    report(have);
    if (have === sizeBytes && !behind) return digestsOf(hashes);
    let writeback: Writeback | undefined;
    let hashing: HashBehind | undefined;
    let around: ReadBackAround | undefined;
    const stopHashing = stopFlag();
    try {
      if (have === sizeBytes) return { sha256: await hashWhole(partialPath, sizeBytes, signal) };
      const response = await http.get(options.url, `file '${options.path}'`, signal, have);
      if (have > 0 && !resumesAt(response, have)) {
        // the hub ignored the Range request: this file starts over
        have = 0;
        hashes = behind ? [] : await hashPrefix(partialPath, 0, sizeBytes, true, signal);
      }
      let received = have;
      const bandwidth = options.bandwidth;
      // readable too: the hashing thread reads the bytes kept from an earlier attempt back through it
      const handle = await open(partialPath, have > 0 ? "r+" : "w+");
      const direct = await openDirectBeside(handle, partialPath, options.directWrites);
      writeback = new Writeback(handle, { sync: options.sync, direct });
      if (behind) {
        // the bytes kept from an earlier attempt are read back and hashed first, then the rest: each block hashed in place
        // as it is written, or, when bytes were kept, read back too (see Writeback.writer), around the page cache where
        // the file is written around it
        hashing = new HashBehind(handle.fd, stopHashing);
        around = have > 0 && direct ? ReadBackAround.open(handle, direct, hashing) : undefined;
        (around ?? hashing).reach(have);
      }
      // synchronous transforms: an async step per chunk would cost more than the hashing
      const counting = new Transform({
        transform(chunk: Buffer, _encoding, done) {
          if (received + chunk.length > sizeBytes) {
            return done(new ModelCacheError("data_loss", `${origin(options)} sent more than the ${sizeBytes} bytes it lists for '${options.path}'; nothing was installed`));
          }
          for (const h of hashes) h.update(chunk);
          received += chunk.length;
          report(received);
          done(null, chunk);
        },
      });
      const throttling = bandwidth
        ? [new Transform({ transform: (chunk: Buffer, _encoding, done) => void bandwidth.take(chunk.length, signal).then(() => done(null, chunk), done) })]
        : [];
      let digests: Digests | undefined;
      try {
        // without a hashing thread (a file checked by its git blob id, hashed here) nothing is read back
        const readBack = have === 0 || !hashing ? undefined : (around ?? "through the page cache");
        await pipeline([response.body, ...throttling, counting, writeback.writer(have, hashing, readBack, sizeBytes - have)], { signal });
        // the partial is durable before it counts as whole
        await writeback.finish();
        if (received === sizeBytes) {
          try {
            digests = hashing ? { sha256: await finishHash(hashing, stopHashing, around, sizeBytes, signal) } : digestsOf(hashes);
          } catch (err) {
            throw signal.aborted ? signal.reason : filesystemError("read back", partialPath, err);
          }
        }
      } finally {
        await writeback.settle();
        // the hashing thread reads through this descriptor, and the read-back through both: they let go before they are closed
        if (hashing) await closeHash(hashing, around);
        await closeBeside(handle, direct);
      }
      if (digests) return digests;
      throw new Error(`the transfer ended after ${received} of ${sizeBytes} bytes`);
    } catch (err) {
      const syncFailure = writeback?.syncFailure;
      if (syncFailure) {
        // bytes a failed sync may have lost must never be resumed from
        await rm(partialPath, { force: true });
        if (signal.aborted) throw signal.reason;
        throw filesystemError("sync", partialPath, syncFailure.error);
      }
      if (signal.aborted) throw signal.reason;
      // the bytes received before the stream failed could not be written: the disk's error is the one to tell
      const writeFailure = writeback?.writeFailure;
      if (writeFailure) err = writeFailure.error;
      if (err instanceof ModelCacheError) {
        if (err.kind === "data_loss") await rm(partialPath, { force: true });
        throw err;
      }
      // a full disk is no network error: retrying cannot help, and the partial stays for a pull once there is room
      if (isOutOfSpace(err)) throw filesystemError("write the download", partialPath, err);
      failures += 1;
      if (failures >= MAX_FAILURES) {
        throw new ModelCacheError("unavailable", `downloading '${options.path}' from ${origin(options)} failed ${failures} times (${(err as Error).message}); pull again to resume`);
      }
      await sleep(http.backoff(failures), undefined, { signal });
    }
  }
}

function digestsOf(hashes: Hash[]): Digests {
  const [sha256, blob] = hashes.map((h) => h.digest("hex"));
  return { sha256: sha256!, gitBlobId: blob };
}

/** What is wrong with a whole file's digests against the listing, if anything. */
function check(options: DownloadOptions, digests: Digests): string | undefined {
  const { sha256, gitBlobId: blob } = digests;
  return options.sha256 !== undefined && sha256 !== options.sha256
    ? `sha256 ${sha256}, ${origin(options)} lists ${options.sha256}`
    : options.gitBlobId !== undefined && blob !== options.gitBlobId
      ? `git blob id ${blob}, ${origin(options)} lists ${options.gitBlobId}`
      : undefined;
}

/** sha256 (and the git blob sha1, "blob <size>\0" + bytes, when asked) of the first `length` bytes on disk. */
async function hashPrefix(path: string, length: number, sizeBytes: number, gitBlob: boolean, signal: AbortSignal): Promise<Hash[]> {
  const hashes = [createHash("sha256")];
  if (gitBlob) hashes.push(createHash("sha1").update(`blob ${sizeBytes}\0`));
  if (length === 0) return hashes;
  let fed = 0;
  for await (const chunk of readFileChunks(path, signal)) {
    const part = chunk.subarray(0, Math.min(chunk.length, length - fed));
    hashes.forEach((h) => h.update(part));
    fed += part.length;
    if (fed >= length) break;
  }
  return hashes;
}

/** Whether the hub answered a Range request with the bytes from `offset` on (206 and a matching Content-Range). */
export function resumesAt(response: { status: number; headers: Record<string, string | string[] | undefined> }, offset: number): boolean {
  if (response.status !== 206) return false;
  const range = /^bytes (\d+)-/.exec(String(response.headers["content-range"] ?? ""));
  return range !== null && Number(range[1]) === offset;
}


/** The source as messages name it. */
export function origin(options: { origin?: string }): string {
  return options.origin ?? "the hub";
}
