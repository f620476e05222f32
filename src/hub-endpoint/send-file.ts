// Sends an opened file as the hub and OCI clients expect: Content-Length,
// Accept-Ranges, one byte range (206 + Content-Range) or 416, and the body
// streamed from the descriptor (a read stream per range, never the whole
// file in memory). The descriptor is closed when the answer ends, however.
import type { IncomingMessage, ServerResponse } from "node:http";
import { pipeline } from "node:stream/promises";
import { byteRange } from "./byte-range.js";
import type { OpenedFile } from "./open-served-file.js";

/** Bytes of content sent, told as they go out (the sent-bytes metric). */
export type SentRecorder = (bytes: number) => void;

/**
 * Sends `file`; a HEAD needs no open file (`handle` undefined): the size is
 * all its headers need. The handle, if any, is closed when the answer ends.
 */
export async function sendFile(req: IncomingMessage, res: ServerResponse, file: Omit<OpenedFile, "handle"> & { handle: OpenedFile["handle"] | undefined }, headers: Record<string, string>, sent?: SentRecorder): Promise<void> {
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
    const stream = handle.createReadStream({ start, end, autoClose: false });
    if (sent) stream.on("data", (chunk: string | Buffer) => sent(chunk.length));
    // a client that goes away midway ends the pipeline with an error: nothing more to send it
    await pipeline(stream, res).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== "ERR_STREAM_PREMATURE_CLOSE" && !res.destroyed) throw err;
    });
  } finally {
    await handle?.close();
  }
}
