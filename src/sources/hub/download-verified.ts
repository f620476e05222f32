// One file of any source (a hub, an object store, a registry, a peer) into its
// partial path, verified: in parallel byte ranges when it is large and its
// sha256 is known (download-segments.ts), else, or when the server ignores
// Range, as one stream resumable from its length (download-file.ts).
import { rm } from "node:fs/promises";
import type { Connections } from "./connections.js";
import { type DownloadOptions, downloadFile } from "./download-file.js";
import { downloadInSegments } from "./download-segments.js";

export interface RangeChoice {
  /** files at least this large, with a known sha256, are fetched as byte ranges */
  parallelRangeMinBytes: number;
  /** idle connections the ranges may borrow */
  connections?: Connections;
  /** the count of bytes for the one stream when ranges were tried first (a fresh attempt's), else the request's own */
  streamOnBytes?: (bytes: number) => void;
}

/** The verified file's sha256, once it is whole in `request.partialPath`. */
export async function downloadVerified(request: DownloadOptions, choice: RangeChoice): Promise<string> {
  const { partialPath, sha256 } = request;
  const ranged = sha256 !== undefined && request.sizeBytes >= choice.parallelRangeMinBytes;
  if (ranged) {
    const fetched = await downloadInSegments({ ...request, sha256, connections: choice.connections });
    if (fetched !== "unsupported") return fetched;
  }
  // no ranges here (a small file, or a server that ignores Range): one stream, resumable from its length
  await rm(`${partialPath}.segments.json`, { force: true });
  // what segments wrote is no prefix of the file
  if (ranged) await rm(partialPath, { force: true });
  return downloadFile(ranged && choice.streamOnBytes ? { ...request, onBytes: choice.streamOnBytes } : request);
}
