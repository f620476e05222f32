// Sends an opened file as the hub and OCI clients expect: Content-Length,
// Accept-Ranges, one byte range (206 + Content-Range) or 416, and the body
// streamed from the descriptor through two reused buffers (never the whole
// file in memory). The descriptor is closed when the answer ends, however.
import type { IncomingMessage, ServerResponse } from "node:http";
import { byteRange } from "./byte-range.js";
import type { OpenedFile } from "./open-served-file.js";

/** Bytes of content sent, told as they go out (the sent-bytes metric). */
export type SentRecorder = (bytes: number) => void;

/** Resolves once `bytes` more may go out (a rate cap: --peer-max-bytes-per-second). */
export type Pace = (bytes: number) => Promise<void>;

/**
 * Sends `file`; a HEAD needs no open file (`handle` undefined): the size is
 * all its headers need. The handle, if any, is closed when the answer ends.
 */
export async function sendFile(req: IncomingMessage, res: ServerResponse, file: Omit<OpenedFile, "handle"> & { handle: OpenedFile["handle"] | undefined }, headers: Record<string, string>, sent?: SentRecorder, pace?: Pace): Promise<void> {
  const { handle, size } = file;
  try {
    const range = byteRange(req.headers.range, size);
    res.setHeader("Accept-Ranges", "bytes");
    for (const [name, value] of Object.entries(headers)) res.setHeader(name, value);
    if (range.kind === "unsatisfiable") {
      res.writeHead(416, { "Content-Range": `bytes */${size}`, "Content-Type": "application/json" }).end(JSON.stringify({ error: `the range ${req.headers.range} lies outside the file's ${size} bytes` }));
      return;
    }
    const [start, end] = range.kind === "part" ? [range.start, range.end] : [0, size - 1];
    res.setHeader("Content-Type", "application/octet-stream");
    res.setHeader("Content-Length", String(end - start + 1));
    if (range.kind === "part") res.writeHead(206, { "Content-Range": `bytes ${start}-${end}/${size}` });
    else res.writeHead(200);
    if (req.method === "HEAD" || size === 0 || !handle) {
      res.end();
      return;
    }
    await sendBytes(handle, res, start, end + 1, sent, pace);
  } finally {
    await handle?.close();
  }
}

/**
 * Bytes per read, and two such buffers per answer: one filled from the file
 * while the other goes out. A read stream instead allocates a fresh 64 KiB
 * buffer per chunk and pipes it through: that served a 512 MiB file at a
 * third to half of nginx's rate (BENCHMARKS.md, `serve`), and the garbage
 * grows the RSS with every concurrent download.
 */
const CHUNK_BYTES = 1024 * 1024;

/**
 * Bytes per read under a rate cap: each piece waits for the cap before it
 * goes out, so a whole 1 MiB chunk under a low cap (or one shared by many
 * peers) would leave the client seconds without a byte, and a peer takes that
 * for a stalled transfer (5 s) and gives up.
 */
const PACED_CHUNK_BYTES = 64 * 1024;

/** Writes bytes [from, to) of `handle` to `res`, then ends it; stops quietly when the client goes away. */
async function sendBytes(handle: OpenedFile["handle"], res: ServerResponse, from: number, to: number, sent?: SentRecorder, pace?: Pace): Promise<void> {
  // a client that goes away midway: its pending writes may never call back, so every wait also ends on close
  const closed = new Promise<"closed">((resolve) => res.once("close", () => resolve("closed")));
  /** Waits for `pending` (a write's outcome, never a rejection: a write's error must not go unhandled while the other is awaited); false once the client is gone. */
  const settled = async (pending: Promise<Error | undefined>): Promise<boolean> => {
    const outcome = await Promise.race([pending, closed]);
    if (outcome === "closed" || res.destroyed) return false;
    if (outcome) throw outcome;
    return true;
  };
  const bytes = Math.min(pace ? PACED_CHUNK_BYTES : CHUNK_BYTES, to - from);
  const buffers = [Buffer.allocUnsafeSlow(bytes), Buffer.allocUnsafeSlow(bytes)];
  const writes: Promise<Error | undefined>[] = [Promise.resolve(undefined), Promise.resolve(undefined)];
  let position = from;
  for (let turn = 0; position < to; turn ^= 1) {
    // the buffer is refilled only after the write that used it is done with it
    if (!(await settled(writes[turn]!))) return;
    const buffer = buffers[turn]!;
    const { bytesRead } = await handle.read(buffer, 0, Math.min(buffer.length, to - position), position);
    if (bytesRead === 0) {
      // fewer bytes than the Content-Length promised: break the connection so the client sees a short body
      res.destroy(new Error(`the served file ended at byte ${position} of ${to}`));
      return;
    }
    position += bytesRead;
    await pace?.(bytesRead);
    writes[turn] = new Promise((resolve) =>
      res.write(buffer.subarray(0, bytesRead), (err) => {
        if (!err) sent?.(bytesRead);
        resolve(err ?? undefined);
      }),
    );
  }
  if (!(await settled(writes[0]!)) || !(await settled(writes[1]!))) return;
  await settled(new Promise((resolve) => res.end(() => resolve(undefined))));
}
