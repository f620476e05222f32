// A forced pull's download of a file the store already holds: every byte
// received is compared with the stored copy at the same offset, and nothing
// is written. A forced pull fetches every file again to prove the install is
// what its source serves; when the source still serves the stored bytes,
// writing them again (syncing them, replacing the stored copy) proves nothing
// more, and costs more than the download on most disks. The file is fetched
// as byte ranges, in parallel while the pull's connections are idle, like
// any large download (download-segments.ts). Each range reads the stored
// copy a block at a time into memory lent by the downloads' blocks
// (staged-write.ts), and compares each chunk received with it where the
// chunk arrived: nothing is copied. Whether the stored copy is intact is not decided
// here: the caller hashes it meanwhile (install-artifacts.ts).
import type { FileHandle } from "node:fs/promises";
import { chunkReceived, giveBack, lendBlock } from "../../cache/staged-write.js";
import { type DownloadOptions, resumesAt } from "./download-file.js";
import { type Segment, cut, fetchAll } from "./download-segments.js";
import type { RangeChoice } from "./download-verified.js";

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
  const stored = lendBlock();
  // the stored copy's bytes from `at` on, `have` of them, in `stored`
  let at = segment.start;
  let have = 0;
  try {
    for await (const chunk of response.body as AsyncIterable<Buffer>) {
      if (segment.done + chunk.length > length) throw DIFFERS;
      await options.bandwidth?.take(chunk.length, signal);
      chunkReceived(chunk.length);
      // each chunk is compared where it arrived: nothing is copied, and it dies young
      for (let offset = 0; offset < chunk.length; ) {
        const position = segment.start + segment.done;
        if (position === at + have) {
          progress();
          at = position;
          have = await readStored(handle, stored, at, Math.min(stored.length, segment.end - at));
        }
        const n = Math.min(chunk.length - offset, at + have - position);
        if (chunk.compare(stored, position - at, position - at + n, offset, offset + n) !== 0) throw DIFFERS;
        offset += n;
        segment.done += n;
      }
    }
  } finally {
    // read only while this loop awaits it: free once the loop has ended, however it ended
    giveBack(stored);
  }
  progress();
  if (segment.done < length) throw new Error(`a range ended after ${segment.done} of ${length} bytes`);
}

/** Reads `length` bytes of the stored copy at `position` into `into`; the stored copy ending before them differs. */
async function readStored(handle: FileHandle, into: Buffer, position: number, length: number): Promise<number> {
  for (let done = 0; done < length; ) {
    const { bytesRead } = await handle.read(into, done, length - done, position + done);
    if (bytesRead === 0) throw DIFFERS;
    done += bytesRead;
  }
  return length;
}
