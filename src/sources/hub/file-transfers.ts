// What a network source (hub, object store, registry) does with one file of
// its listing, on its own connections: fetch it, verified, into its partial
// path (download-verified.ts), or, for a forced pull, compare it with the
// store's copy (download-matching.ts). Each source says how to ask for a file
// (its request); both transfers hold one of the source's connections and may
// borrow idle ones for ranges.
import type { FileHandle } from "node:fs/promises";
import type { Connections } from "./connections.js";
import type { DownloadOptions } from "./download-file.js";
import { downloadMatching } from "./download-matching.js";
import { downloadVerified } from "./download-verified.js";

export interface FileTransfers {
  /** The verified file, whole at `request.partialPath`, and its sha256. */
  fetch(request: DownloadOptions): Promise<{ path: string; sha256: string }>;
  /** Whether every byte equals the stored copy open at `stored` (nothing written). */
  match(request: DownloadOptions, stored: FileHandle): Promise<boolean>;
}

export function fileTransfers(connections: Connections, parallelRangeMinBytes: number): FileTransfers {
  const choice = { parallelRangeMinBytes, connections };
  return {
    fetch: (request) => connections.whileHeld(async () => ({ path: request.partialPath, sha256: await downloadVerified(request, choice) })),
    match: (request, stored) => connections.whileHeld(() => downloadMatching(request, stored, choice)),
  };
}
