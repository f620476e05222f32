// The events of a pull, in the order the contract gives: started, then per
// file started / progress / completed, then completed once promoted.
import type { FileEvent } from "../cache/install-artifacts.js";
import type { Manifest } from "../cache/manifest.js";

export type PullEvent =
  | { type: "started"; source: string; fileCount: number; totalBytes: number }
  | FileEvent
  | { type: "completed"; cacheDir: string; manifest: Manifest };
