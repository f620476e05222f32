// A forced pull's download of a file the store already holds: every byte
// received is compared with the stored copy at the same offset, and nothing
// is written. A forced pull fetches every file again to prove the install is
// what its source serves; when the source still serves the stored bytes,
// writing them again (syncing them, replacing the stored copy) proves nothing
// more, and costs more than the download on most disks. The file is fetched
// as byte ranges, in parallel while the pull's connections are idle, like
// any large download (download-segments.ts), and compared a 1 MiB block at a
// time (staged-write.ts). Whether the stored copy is intact is not decided
// here: the caller hashes it meanwhile (install-artifacts.ts).
import type { FileHandle } from "node:fs/promises";
import { BLOCK_BYTES, type PutBlock, StagedWrite } from "../../cache/staged-write.js";
import { type DownloadOptions, resumesAt } from "./download-file.js";
import { type Segment, cut, fetchAll } from "./download-segments.js";
import type { RangeChoice } from "./download-verified.js";

/** buffers the stored copy's blocks are read into (a block each, as StagedWrite puts), kept for the next comparisons */
const spare: Buffer[] = [];
const SPARE_BLOCKS = 8;

const DIFFERS = new Error("a byte differs from the stored copy");

/**
 * Whether every byte of the file, fetched, equals the stored copy open at
 * `stored`. False at the first byte that differs, and whenever the
 * comparison cannot be made (a dropped connection, a server that ignores
 * Range, a read of the stored copy that fails): the caller then downloads the
 * file the ordinary way, which retries, resumes, and reports such failures
 * as its own. Throws only when `request.signal` is aborted.
 */
export async function downloadMatching(request: Omit<DownloadOptions, "partialPath">, stored: FileHandle, choice: RangeChoice): Promise<boolean> {
  const { sizeBytes, signal } = request;
  const segments: Segment[] = sizeBytes >= choice.parallelRangeMinBytes ? cut(sizeBytes) : [{ start: 0, end: sizeBytes, done: 0 }];
  let told = 0;
  const progress = () => {
    const done = segments.reduce((sum, s) => sum + s.done, 0);
    request.onBytes(done - told);
    told = done;
  };
  // the first segment to differ or fail stops the others; every one has settled when fetchAll returns
  const stop = new AbortController();
  const inner = AbortSignal.any([signal, stop.signal]);
  await fetchAll(segments, choice.connections, inner, stop, (segment) => compareSegment(segment, stored, { ...request, signal: inner }, progress));
  if (signal.aborted) throw signal.reason;
  return !stop.signal.aborted && segments.every((s) => s.done === s.end - s.start);
}

async function compareSegment(segment: Segment, handle: FileHandle, options: Omit<DownloadOptions, "partialPath">, progress: () => void): Promise<void> {
  const { http, signal } = options;
  const length = segment.end - segment.start;
  const response = await http.get(options.url, `file '${options.path}'`, signal, segment.start, segment.end);
  if (!resumesAt(response, segment.start)) {
    response.body.destroy();
    throw new Error("the source ignored the Range request");
  }
  const stored = spare.pop() ?? Buffer.allocUnsafeSlow(BLOCK_BYTES);
  // one block: the comparison reads the stored copy into `stored` meanwhile, a second block would add memory, not speed
  const staged = new StagedWrite(
    compareWith(handle, stored),
    segment.start,
    (bytes) => {
      segment.done += bytes;
      progress();
    },
    1,
  );
  try {
    for await (const chunk of response.body as AsyncIterable<Buffer>) {
      if (segment.done + staged.pending + chunk.length > length) throw DIFFERS;
      await options.bandwidth?.take(chunk.length, signal);
      const full = staged.add(chunk);
      if (full) await full;
    }
    await staged.flush();
  } finally {
    // one comparison at a time reads into `stored`: it is free once the last one has ended
    await staged.release();
    if (spare.length < SPARE_BLOCKS) spare.push(stored);
  }
  if (segment.done < length) throw new Error(`a range ended after ${segment.done} of ${length} bytes`);
}

/** Compares each block received with the stored copy's bytes at its position, read into `stored`. */
function compareWith(handle: FileHandle, stored: Buffer): PutBlock {
  return async (block, length, position) => {
    for (let done = 0; done < length; ) {
      const { bytesRead } = await handle.read(stored, done, length - done, position + done);
      // the stored copy ends before the bytes received
      if (bytesRead === 0) throw DIFFERS;
      done += bytesRead;
    }
    if (block.compare(stored, 0, length, 0, length) !== 0) throw DIFFERS;
  };
}
