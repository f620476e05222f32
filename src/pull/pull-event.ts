// The events of a pull, in the order the contract gives: queued while it
// waits for a slot, started, then per file started / progress / completed,
// then completed once promoted.
import type { Manifest } from "../cache/manifest.js";

export type PullEvent =
  | { type: "queued"; position: number; running: number }
  | { type: "started"; source: string; fileCount: number; totalBytes: number; reusedBytes: number; evictedModels: string[] }
  | { type: "file_started"; path: string; index: number; sizeBytes: number }
  | { type: "file_progress"; path: string; bytesDone: number; sizeBytes: number; totalBytesDone: number; totalBytes: number }
  | { type: "file_completed"; path: string; sha256: string; sizeBytes: number; reused: boolean }
  | { type: "completed"; cacheDir: string; manifest: Manifest; reusedBytes: number; peerBytes?: number };
