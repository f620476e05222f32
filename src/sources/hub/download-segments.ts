// Downloads one large LFS file as several byte ranges at once (as
// hf_transfer does), each written straight to its place in the partial file.
// Each range's progress is kept in `<partial>.segments.json`, so a dropped
// connection, a cancelled pull or a restart resumes every range where it
// stopped. The file is hashed once whole, on the worker pool, and checked
// against the hub's sha256. A hub that ignores Range makes the caller fall
// back to one stream.
import { mkdir, open, readFile, rm, stat } from "node:fs/promises";
import { dirname } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { FileHandle } from "node:fs/promises";
import { writeFileDurably } from "../../cache/durable.js";
import { Writeback } from "../../cache/writeback.js";
import { ModelCacheError, filesystemError } from "../../errors.js";
import { type DownloadOptions, resumesAt } from "./download-file.js";

interface Segment {
  start: number;
  end: number;
  done: number;
}

export interface SegmentedOptions extends DownloadOptions {
  sha256: string;
  segments: number;
  hasher: (path: string, signal: AbortSignal) => Promise<string>;
}

const FLUSH_BYTES = 1024 * 1024;
const MAX_FAILURES = 5;

/** The verified sha256, or "unsupported" when the hub does not serve ranges. */
export async function downloadInSegments(options: SegmentedOptions): Promise<string | "unsupported"> {
  const { http, partialPath, sizeBytes, signal } = options;
  const statePath = `${partialPath}.segments.json`;
  await mkdir(dirname(partialPath), { recursive: true });
  let segments = await readState(statePath, partialPath, sizeBytes);
  if (!segments) {
    const handle = await open(partialPath, "w");
    await handle.truncate(sizeBytes);
    await handle.close();
    const step = Math.ceil(sizeBytes / options.segments / FLUSH_BYTES) * FLUSH_BYTES;
    segments = [];
    for (let start = 0; start < sizeBytes; start += step) segments.push({ start, end: Math.min(sizeBytes, start + step), done: 0 });
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
  let reported = 0;
  const report = () => {
    const done = all.reduce((sum, s) => sum + s.done, 0);
    if (done > reported) {
      options.onBytes(done - reported);
      reported = done;
    }
  };
  report();

  const handle = await open(partialPath, "r+");
  const writeback = new Writeback(handle, {
    sync: options.sync,
    checkpoint: () => {
      const reached = all.map((s) => s.done);
      return () => {
        reached.forEach((done, i) => (durable[i] = Math.max(durable[i]!, done)));
        save();
      };
    },
  });
  // the first range to fail stops the others; all settle before the file is closed
  const stop = new AbortController();
  const inner = AbortSignal.any([signal, stop.signal]);
  let failure: { error: unknown } | undefined;
  try {
    const settled = await Promise.allSettled(
      all.map((segment) =>
        fetchSegment(segment, handle, writeback, { ...options, signal: inner }, report).catch((err: unknown) => {
          stop.abort(err);
          throw err;
        }),
      ),
    );
    if (settled.some((r) => r.status === "rejected")) {
      failure = { error: stop.signal.reason };
      // what did arrive is kept for the next attempt once it is on the disk; a sync that
      // fails here is not lost: it is the writeback's syncFailure, handled below
      await writeback.finish().then(
        () => all.forEach((s, i) => (durable[i] = s.done)),
        () => undefined,
      );
    } else {
      await writeback.finish();
      all.forEach((s, i) => (durable[i] = s.done));
    }
  } catch (error) {
    failure = { error };
  } finally {
    await writeback.settle();
    await handle.close();
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
  await save();
  await saving;
  if (failure) {
    if (signal.aborted) throw signal.reason;
    if (failure.error === RANGE_IGNORED) return "unsupported";
    throw failure.error;
  }
  if (saveFailure) throw filesystemError("write", statePath, saveFailure.error);
  const sha256 = await options.hasher(partialPath, signal);
  await rm(statePath, { force: true });
  if (sha256 !== options.sha256) {
    await rm(partialPath, { force: true });
    throw new ModelCacheError(
      "data_loss",
      `file '${options.path}' from the hub does not match its listing: its bytes have sha256 ${sha256}, the hub lists ${options.sha256}; nothing was installed`,
    );
  }
  return sha256;
}

const RANGE_IGNORED = new Error("the hub ignored the Range request");

async function fetchSegment(segment: Segment, handle: FileHandle, writeback: Writeback, options: SegmentedOptions, report: () => void): Promise<void> {
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
      let pending: Buffer[] = [];
      let pendingBytes = 0;
      const flush = async () => {
        if (pendingBytes === 0) return;
        const block = Buffer.concat(pending, pendingBytes);
        pending = [];
        pendingBytes = 0;
        for (let offset = 0; offset < block.length; ) {
          offset += (await handle.write(block, offset, block.length - offset, segment.start + segment.done + offset)).bytesWritten;
        }
        segment.done += block.length;
        writeback.wrote(block.length);
        report();
      };
      for await (const chunk of response.body as AsyncIterable<Buffer>) {
        if (segment.done + pendingBytes + chunk.length > length) {
          throw new ModelCacheError("data_loss", `the hub sent more bytes than asked for a range of '${options.path}'; nothing was installed`);
        }
        await options.bandwidth?.take(chunk.length, signal);
        pending.push(chunk);
        pendingBytes += chunk.length;
        if (pendingBytes >= FLUSH_BYTES) await flush();
      }
      await flush();
      if (segment.done < length) throw new Error(`a range ended after ${segment.done} of ${length} bytes`);
    } catch (err) {
      if (err === RANGE_IGNORED || signal.aborted || err instanceof ModelCacheError) throw signal.aborted ? signal.reason : err;
      failures += 1;
      if (failures >= MAX_FAILURES) {
        throw new ModelCacheError("unavailable", `downloading '${options.path}' from the hub failed ${failures} times (${(err as Error).message}); pull again to resume`);
      }
      await sleep(http.backoff(failures), undefined, { signal });
    }
  }
}

async function readState(statePath: string, partialPath: string, sizeBytes: number): Promise<Segment[] | undefined> {
  try {
    const state = JSON.parse(await readFile(statePath, "utf8")) as { sizeBytes: number; segments: Segment[] };
    const partial = await stat(partialPath);
    const valid =
      state.sizeBytes === sizeBytes &&
      partial.size === sizeBytes &&
      Array.isArray(state.segments) &&
      state.segments.every((s) => Number.isSafeInteger(s.start) && Number.isSafeInteger(s.end) && Number.isSafeInteger(s.done) && s.done >= 0 && s.done <= s.end - s.start);
    return valid ? state.segments : undefined;
  } catch {
    return undefined;
  }
}

async function writeState(statePath: string, sizeBytes: number, segments: Segment[]): Promise<void> {
  await writeFileDurably(statePath, JSON.stringify({ sizeBytes, segments }));
}
