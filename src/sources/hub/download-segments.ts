// Downloads one large LFS file as consecutive byte ranges (segments), each
// written straight to its place in the partial file. One connection fetches
// them in order; idle connections of the pull (see connections.ts) join in
// and take the next ones, so a lone large file is fetched in parallel, while
// files already downloading side by side are not split further. The file is
// hashed in order as its segments land, on the hashing thread (see
// InOrderHash), so no pass over the whole file is left at the end. Each segment's progress is kept in
// `<partial>.segments.json`, counting only bytes a completed sync has put on
// the disk, so a dropped connection, a
// cancelled pull or a restart resumes every segment where it stopped. A
// resumed file that fails verification is fetched once more from zero. A hub
// that ignores Range makes the caller fall back to one stream.
import { mkdir, open, readFile, rm, stat } from "node:fs/promises";
import { dirname } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { FileHandle } from "node:fs/promises";
import { writeFileDurably } from "../../fs/durable.js";
import { closeBeside, openDirectBeside } from "../../cache/direct-writes.js";
import { HashBehind, hashWhole, stopFlag } from "../../cache/hash-behind.js";
import { ReadBackAround, closeHash, finishHash } from "../../cache/read-back-around.js";
import { BLOCK_BYTES, type PutBlock, StagedWrite, writeTo } from "../../cache/staged-write.js";
import { Writeback, writeAndHash } from "../../cache/writeback.js";
import { ModelCacheError, filesystemError, isOutOfSpace } from "../../errors.js";
import type { Connections } from "./connections.js";
import { type DownloadOptions, origin, resumesAt } from "./download-file.js";

export interface Segment {
  start: number;
  end: number;
  done: number;
}

export interface SegmentedOptions extends DownloadOptions {
  sha256: string;
  /** idle connections that may fetch further segments at once; without, one segment at a time */
  connections?: Connections;
}

/** A file is cut into at least this many segments, so that idle connections can share it. */
const MIN_SEGMENTS = 4;
const MAX_SEGMENT_BYTES = 16 * 1024 * 1024;
const MAX_FAILURES = 5;

/** The verified sha256, or "unsupported" when the hub does not serve ranges. */
export async function downloadInSegments(options: SegmentedOptions): Promise<string | "unsupported"> {
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
  let fetched = await fetchSegments(options, report);
  if (fetched !== "unsupported" && fetched.sha256 !== options.sha256 && fetched.resumed) {
    // the bytes kept from an earlier attempt may be what is wrong (a crash before they were synced)
    await rm(partialPath, { force: true });
    fetched = await fetchSegments(options, report);
  }
  if (fetched === "unsupported") return fetched;
  if (fetched.sha256 !== options.sha256) {
    await rm(partialPath, { force: true });
    throw new ModelCacheError(
      "data_loss",
      `file '${options.path}' from ${origin(options)} does not match its listing: its bytes have sha256 ${fetched.sha256}, ${origin(options)} lists ${options.sha256}; nothing was installed`,
    );
  }
  return fetched.sha256;
}

/** Fetches the segments the partial lacks; the whole file's sha256 (not yet checked), and whether it resumed earlier bytes. */
async function fetchSegments(options: SegmentedOptions, report: (done: number) => void): Promise<{ sha256: string; resumed: boolean } | "unsupported"> {
  const { partialPath, sizeBytes, signal } = options;
  const statePath = `${partialPath}.segments.json`;
  let segments = await readState(statePath, partialPath, sizeBytes);
  const resumed = segments?.some((s) => s.done > 0) ?? false;
  if (!segments) {
    const handle = await open(partialPath, "w");
    await handle.truncate(sizeBytes);
    await handle.close();
    segments = cut(sizeBytes);
  }
  const all = segments;
  // the state counts only bytes a completed sync has put on the disk: a crash may lose the rest
  const durable = all.map((s) => s.done);
  let saving: Promise<void> = Promise.resolve();
  let saveFailure: { error: unknown } | undefined;
  const save = () =>
    (saving = saving
      .then(() => writeState(statePath, sizeBytes, all.map((s, i) => ({ ...s, done: durable[i]! }))))
      .catch((error: unknown) => {
        // without a state file the download starts over next time; the first failure is reported at the end
        saveFailure ??= { error };
      }));
  await save();
  const progress = () => report(all.reduce((sum, s) => sum + s.done, 0));
  progress();

  const handle = await open(partialPath, "r+");
  const direct = await openDirectBeside(handle, partialPath, options.directWrites);
  const writeback = new Writeback(handle, {
    sync: options.sync,
    direct,
    checkpoint: () => {
      const reached = all.map((s) => s.done);
      return () => {
        reached.forEach((done, i) => (durable[i] = Math.max(durable[i]!, done)));
        save();
      };
    },
  });
  // the first segment to fail stops the others; all settle before the file is closed
  const stop = new AbortController();
  const inner = AbortSignal.any([signal, stop.signal]);
  const hashing = new InOrderHash(handle, direct, partialPath, all, resumed);
  // segments fetched at once: a block is hashed in place only while its file has one
  let fetching = 0;
  const put = hashing.put(writeTo(handle), writeback.put(), () => fetching === 1);
  let failure: { error: unknown } | undefined;
  try {
    // bytes received, whether written yet or not: what says how fast the connections bring the file
    let received = 0;
    await fetchAll(
      all,
      options.connections,
      inner,
      stop,
      async (segment) => {
        fetching += 1;
        try {
          await fetchSegment(
            segment,
            put,
            writeback,
            { ...options, signal: inner },
            () => {
              progress();
              hashing.landed();
            },
            (bytes) => (received += bytes),
          );
        } finally {
          fetching -= 1;
        }
      },
      () => received,
    );
    if (stop.signal.aborted) {
      failure = { error: stop.signal.reason };
      // what did arrive is kept for the next attempt once it is on the disk; a sync that
      // fails here is not lost: it is the writeback's syncFailure, handled below
      await writeback.finish().then(
        () => all.forEach((s, i) => (durable[i] = s.done)),
        () => undefined,
      );
    } else {
      // the last bytes are hashed while they are synced
      await Promise.all([writeback.finish().then(() => all.forEach((s, i) => (durable[i] = s.done))), hashing.end(inner)]);
    }
  } catch (error) {
    failure ??= { error };
  } finally {
    await hashing.settle();
    await writeback.settle();
    await closeBeside(handle, direct);
  }
  const syncFailure = writeback.syncFailure;
  if (syncFailure) {
    // bytes a failed sync may have lost must never be resumed from: nothing of this file is kept
    await saving;
    await rm(statePath, { force: true });
    await rm(partialPath, { force: true });
    if (signal.aborted) throw signal.reason;
    throw filesystemError("sync", partialPath, syncFailure.error);
  }
  if (failure) {
    await save();
    await saving;
    if (signal.aborted) throw signal.reason;
    if (failure.error === RANGE_IGNORED) return "unsupported";
    throw failure.error;
  }
  await saving;
  if (saveFailure) throw filesystemError("write", statePath, saveFailure.error);
  await rm(statePath, { force: true });
  return { sha256: hashing.digest(), resumed };
}

/** Consecutive segments covering `sizeBytes`, whole blocks (staged-write.ts) each but the last, so that each is written in whole blocks. */
export function cut(sizeBytes: number): Segment[] {
  const step = Math.min(MAX_SEGMENT_BYTES, Math.max(BLOCK_BYTES, Math.ceil(sizeBytes / MIN_SEGMENTS / BLOCK_BYTES) * BLOCK_BYTES));
  const segments: Segment[] = [];
  for (let start = 0; start < sizeBytes; start += step) segments.push({ start, end: Math.min(sizeBytes, start + step), done: 0 });
  return segments;
}

/**
 * Runs `fetch` on every unfinished segment, in order: one at a time on the
 * file's own connection, more at once while idle connections can be borrowed
 * and the file's own connection has proved too slow alone (see
 * Connections.joinBelowBytesPerSecond). Resolves once every started fetch
 * has settled; the first failure aborts `stop`.
 */
export async function fetchAll(
  all: Segment[],
  connections: Connections | undefined,
  signal: AbortSignal,
  stop: AbortController,
  fetch: (segment: Segment) => Promise<void>,
  received: () => number = () => all.reduce((sum, s) => sum + s.done, 0),
): Promise<void> {
  let next = 0;
  const take = () => {
    while (next < all.length && all[next]!.done === all[next]!.end - all[next]!.start) next += 1;
    return next < all.length ? all[next++] : undefined;
  };
  const running: Promise<void>[] = [];
  const pace = connections && new Pace(connections, received, () => grow());
  const fetcher = async (release?: () => void) => {
    try {
      for (let segment = take(); segment && !signal.aborted; segment = take()) {
        grow();
        await fetch(segment);
      }
    } catch (err) {
      if (!stop.signal.aborted) stop.abort(err);
    } finally {
      release?.();
    }
  };
  const grow = () => {
    while (connections && pace?.joining && next < all.length && !signal.aborted) {
      const release = connections.borrow();
      if (!release) return;
      running.push(fetcher(release));
    }
  };
  const unlisten = connections?.onRelease(grow);
  try {
    running.push(fetcher());
    for (let settled = 0; settled < running.length; ) {
      settled = running.length;
      await Promise.all(running.slice());
    }
  } finally {
    unlisten?.();
    pace?.stop();
  }
  if (signal.aborted && !stop.signal.aborted) stop.abort(signal.reason);
}

/** How often the rate of a file's lone connection is measured. */
const RATE_WINDOW_MS = 250;

/**
 * Whether idle connections join a file: from the start when the threshold
 * is Infinity, never when 0, else once its own connection, with the pull to
 * itself, received it slower than the threshold over a window of
 * RATE_WINDOW_MS. What counts is what arrives, not what was written and
 * hashed: a slow disk is no reason for more connections. The first window
 * opens once bytes arrive (not during the connection's setup), and a window
 * counts only while no other download holds a connection. Once joined, for
 * the rest of the file.
 */
class Pace {
  joining: boolean;
  private readonly timer: NodeJS.Timeout | undefined;
  /** the window under way: since when, from how many bytes received; none before the first byte */
  private window: { start: number; from: number } | undefined;

  constructor(
    private readonly connections: Connections,
    private readonly received: () => number,
    private readonly joined: () => void,
  ) {
    const below = connections.joinBelowBytesPerSecond;
    this.joining = below === Infinity;
    if (this.joining || below <= 0) return;
    const before = received();
    this.timer = setInterval(() => {
      const now = performance.now();
      const bytes = this.received();
      if (this.window && this.connections.alone && ((bytes - this.window.from) * 1000) / (now - this.window.start) < below) {
        this.joining = true;
        this.stop();
        this.joined();
        return;
      }
      if (this.window || bytes > before) this.window = { start: now, from: bytes };
    }, RATE_WINDOW_MS);
    // a check of the rate keeps no process alive
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

/**
 * sha256 of the file in order, on the hashing thread (see hash-behind.ts), so
 * the main thread, which receives every byte, hashes none. While one
 * connection fetches the file, segment after segment, each block is handed
 * over and hashed in place while it is written. While several fetch it at
 * once, the blocks land out of order, and each is hashed once every byte
 * before it has landed: written around the page cache where the file allows
 * it, and read back from the disk the same way (read-back-around.ts), else
 * written through the page cache and read back from it by the hashing
 * thread. A block handed over in place then would wait for what must be
 * read back before it, and its stream with it (measured: a lone 512 MiB
 * file pulled a tenth slower).
 */
class InOrderHash {
  private readonly behind: HashBehind;
  /** set (shared memory) when the download is stopped: the hashing thread stops reading within 1 MiB */
  private readonly stop = stopFlag();
  /** reads back what landed around the page cache; undefined: the hashing thread reads it from the page cache */
  private readonly around: ReadBackAround | undefined;
  /** the first segment not yet whole */
  private edge = 0;
  private sha256: string | undefined;
  /**
   * A block was hashed in place but its write failed: the range is fetched
   * again, and the bytes written then may not be those hashed. The file is
   * then hashed whole, from the disk, at the end.
   */
  private hashedUnwritten = false;

  /**
   * With `direct` (the file's descriptor around the page cache), blocks that
   * are not hashed in place are written and read back around the page
   * cache. With `resumed` (ranges kept from an earlier attempt), every block
   * is read back: a block handed over would wait, its stream with it, until
   * the kept bytes before it are read back.
   */
  constructor(
    handle: FileHandle,
    direct: FileHandle | undefined,
    private readonly path: string,
    private readonly segments: Segment[],
    private readonly resumed: boolean,
  ) {
    this.behind = new HashBehind(handle.fd, this.stop);
    this.around = direct && ReadBackAround.open(handle, direct, this.behind);
  }

  /**
   * How a block is put: by `inPlace` and handed over when `alone` and it is
   * the next to hash; else written by `inPlace` too when what is not handed
   * over is read back around the page cache, or by `throughPageCache`.
   */
  put(throughPageCache: PutBlock, inPlace: PutBlock, alone: () => boolean): PutBlock {
    const around = this.around;
    return (block, length, position) => {
      const next = !this.resumed && !this.hashedUnwritten && alone() && position === this.frontier() && (!around || around.takesInPlace(position));
      if (!next) return around ? inPlace(block, length, position) : throughPageCache(block, length, position);
      if (around) around.handedInPlace(position, position + length);
      // the bytes before it (kept from an earlier attempt, or fetched beside) are read back first
      else this.behind.reach(position);
      return writeAndHash(inPlace, this.behind, block, length, position).catch((error: unknown) => {
        this.hashedUnwritten = true;
        throw error;
      });
    };
  }

  /** Notes that bytes were written (their segment's `done` already counts them). */
  landed(): void {
    // the file is hashed whole at the end: nothing more is read back for this hash
    if (this.hashedUnwritten) return;
    (this.around ?? this.behind).reach(this.frontier());
  }

  /** Hashes whatever is left once every segment is whole. */
  async end(signal: AbortSignal): Promise<void> {
    // hashWhole names the file in its own errors
    if (this.hashedUnwritten) return void (this.sha256 = await hashWhole(this.path, this.frontier(), signal));
    try {
      this.sha256 = await finishHash(this.behind, this.stop, this.around, this.frontier(), signal);
    } catch (error) {
      throw signal.aborted ? signal.reason : filesystemError("read back", "the partial download", error);
    }
  }

  /** Resolves once nothing reads the file any more, so it can be closed; never throws (end() reports). */
  async settle(): Promise<void> {
    await closeHash(this.behind, this.around);
  }

  digest(): string {
    return this.sha256!;
  }

  /** The end of the bytes that have all landed from the start of the file. */
  private frontier(): number {
    while (this.edge < this.segments.length) {
      const segment = this.segments[this.edge]!;
      if (segment.done < segment.end - segment.start) return segment.start + segment.done;
      this.edge += 1;
    }
    return this.segments.at(-1)?.end ?? 0;
  }
}

const RANGE_IGNORED = new Error("the hub ignored the Range request");

async function fetchSegment(segment: Segment, put: PutBlock, writeback: Writeback, options: SegmentedOptions, landed: () => void, received: (bytes: number) => void): Promise<void> {
  const { http, signal } = options;
  const length = segment.end - segment.start;
  for (let failures = 0; segment.done < length; ) {
    try {
      const from = segment.start + segment.done;
      const response = await http.get(options.url, `file '${options.path}'`, signal, from, segment.end);
      if (!resumesAt(response, from)) {
        response.body.destroy();
        throw RANGE_IGNORED;
      }
      // a range with the pull to itself takes a third block, so that its puts follow one another with no gap
      const blocks = options.connections?.alone ? 3 : 2;
      const staged = new StagedWrite(
        put,
        from,
        (bytes) => {
          segment.done += bytes;
          writeback.wrote(bytes);
          landed();
        },
        blocks,
      );
      try {
        for await (const chunk of response.body as AsyncIterable<Buffer>) {
          if (segment.done + staged.pending + chunk.length > length) {
            throw new ModelCacheError("data_loss", `${origin(options)} sent more bytes than asked for a range of '${options.path}'; nothing was installed`);
          }
          await options.bandwidth?.take(chunk.length, signal);
          received(chunk.length);
          const full = staged.add(chunk);
          if (full) await full;
        }
        await staged.flush();
      } catch (err) {
        // the retry, or the next pull, asks for what follows the bytes that arrived
        await staged.keepAfter(err);
        throw err;
      } finally {
        void staged.release();
      }
      if (segment.done < length) throw new Error(`a range ended after ${segment.done} of ${length} bytes`);
    } catch (err) {
      if (err === RANGE_IGNORED || signal.aborted || err instanceof ModelCacheError) throw signal.aborted ? signal.reason : err;
      // a full disk is no network error: retrying cannot help, and what arrived stays for a pull once there is room
      if (isOutOfSpace(err)) throw filesystemError("write the download", options.partialPath, err);
      failures += 1;
      if (failures >= MAX_FAILURES) {
        throw new ModelCacheError("unavailable", `downloading '${options.path}' from ${origin(options)} failed ${failures} times (${(err as Error).message}); pull again to resume`);
      }
      await sleep(http.backoff(failures), undefined, { signal });
    }
  }
}

async function readState(statePath: string, partialPath: string, sizeBytes: number): Promise<Segment[] | undefined> {
  let text: string;
  try {
    text = await readFile(statePath, "utf8");
  } catch (err) {
    // no state: this file starts from zero
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw filesystemError("read", statePath, err);
  }
  try {
    const state = JSON.parse(text) as { sizeBytes: number; segments: Segment[] };
    const partial = await stat(partialPath).catch(() => undefined);
    // consecutive segments from 0 to the end, each no further done than its length
    const valid =
      state.sizeBytes === sizeBytes &&
      partial?.size === sizeBytes &&
      Array.isArray(state.segments) &&
      state.segments.length > 0 &&
      state.segments.every(
        (s, i) =>
          Number.isSafeInteger(s.start) &&
          Number.isSafeInteger(s.end) &&
          Number.isSafeInteger(s.done) &&
          s.start === (i === 0 ? 0 : state.segments[i - 1]!.end) &&
          s.end > s.start &&
          s.done >= 0 &&
          s.done <= s.end - s.start,
      ) &&
      state.segments.at(-1)!.end === sizeBytes;
    return valid ? state.segments.map(({ start, end, done }) => ({ start, end, done })) : undefined;
  } catch {
    // a torn or foreign state file: this file starts from zero
    return undefined;
  }
}

async function writeState(statePath: string, sizeBytes: number, segments: Segment[]): Promise<void> {
  await writeFileDurably(statePath, JSON.stringify({ sizeBytes, segments }));
}
