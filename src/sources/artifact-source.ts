// What a pull installs from: a listing of files with their sizes, and either
// the files' places on this machine or a way to fetch each one into place.
import type { FileHandle } from "node:fs/promises";
import type { Dispatcher } from "undici";
import type { CacheLayout } from "../cache/layout.js";
import type { Bandwidth } from "./hub/bandwidth.js";

/** What every network source (hub, S3, OCI) is opened with: where its partial downloads go, the rate cap, the way out. */
export interface RemoteSourceOptions {
  layout: CacheLayout;
  /** the model pulled: its partial downloads live under its name */
  name: string;
  bandwidth?: Bandwidth;
  /** files at least this large are fetched as byte ranges, in parallel while connections are idle */
  parallelRangeMinBytes: number;
  /** ... and while one connection brings the file slower than this (see Connections) */
  parallelRangeBelowBytesPerSecond: number;
  /** false: downloads are written through the page cache only (see DownloadOptions) */
  directWrites?: boolean;
  /** how requests leave the machine (proxies) */
  dispatcher?: Dispatcher;
  signal: AbortSignal;
}

export interface SourceFile {
  /** relative, '/'-separated */
  path: string;
  sizeBytes: number;
  /** the content's sha256, when the source lists it (a hub's LFS files) */
  sha256?: string;
  /**
   * the content's git blob id, when the source lists it (a hub's other
   * files), or another id of the content that the store maps to its sha256
   * once learned (an S3 object's version, "s3:..."; see objectVersionId)
   */
  gitBlobId?: string;
}

interface SourceListing {
  /** how the source reads in PullStarted, e.g. "dir:/srv/models/minilm" */
  readonly description: string;
  /** the hub commit the files come from, for a hub */
  readonly resolvedCommit?: string;
  /** the directory the files come from, for a local directory: the install's origin, which its repairs come from too */
  readonly directory?: string;
  /** sorted by path, never empty */
  readonly files: readonly SourceFile[];
  /** called once the install is promoted */
  installed?(): Promise<void>;
  /**
   * Called under the model's lock when the pull ends without an install
   * (failed, cancelled), every fetch settled: what only this pull could use
   * goes now, not at the next start (a peer's files handed over in the
   * store's ingest area, an OCI archive's unpacked entries), while
   * resumable downloads stay.
   */
  abandoned?(): Promise<void>;
}

/** Files on this machine: the installer copies and hashes them on its worker pool. */
export interface LocalSource extends SourceListing {
  /** where the file is on the local disk */
  localPath(file: SourceFile): string;
}

/** Files elsewhere (a hub): the source fetches each one itself. */
export interface FetchingSource extends SourceListing {
  /**
   * Fetches the file (a hub: resumable download) and verifies it against the
   * listing; returns where the complete, synced file is, for the content
   * store to take by rename, and its sha256.
   */
  fetch(file: SourceFile, signal: AbortSignal, onBytes: (bytes: number) => void): Promise<{ path: string; sha256: string }>;
  /**
   * For a forced pull: fetches the file and compares every byte with
   * `stored`, the store's copy of the content its listing names (open for
   * reading), writing nothing. Whether every byte matched; false also when
   * the comparison could not be made (the caller then fetches the file).
   * Throws only when cancelled.
   */
  match?(file: SourceFile, stored: FileHandle, signal: AbortSignal, onBytes: (bytes: number) => void): Promise<boolean>;
  /** Told when a file whose comparison matched was kept: its stored copy found intact and linked. */
  kept?(file: SourceFile): void;
  /**
   * Content whose files are known only once it is fetched (an OCI archive
   * layer), listed by what is known ahead: its blob, `path` naming it (its
   * digest) and `sizeBytes` its size. Not files of the install.
   */
  archives?: readonly SourceFile[];
  /**
   * Fetches and unpacks the archives, each reported to `observer` as a
   * transfer of its own; returns the listing of the install: `files` and
   * the archives' entries, filtered, sorted by path. The pull calls it once
   * it holds the model's lock and has said PullStarted, so what it fetches
   * is held as any download in flight.
   */
  unpack?(signal: AbortSignal, observer: TransferObserver): Promise<SourceFile[]>;
  /** verified bytes fetched from peer servers instead of the source so far (src/peers/with-peers.ts) */
  peerBytes?(): number;
}

/** Told of each transfer as it goes (a pull's events). */
export interface TransferObserver {
  fileStarted(file: SourceFile, index: number): void;
  bytesWritten(file: SourceFile, bytes: number): void;
  fileCompleted(file: SourceFile, sha256: string, reused: boolean): void;
  /** makes room for `bytes` the pull did not know of when it was admitted (an archive's entries) before they are written, and `slack` more when that fits without evicting; the bytes reserved */
  reserve?(bytes: number, slack: number): Promise<number>;
  /** `bytes` were written where capacity counts them as stored already (an archive's entries, in the pull's partial dir): no longer reserved */
  written?(bytes: number): void;
}

export type ArtifactSource = LocalSource | FetchingSource;
