// What a pull installs from: a listing of files with their sizes, and either
// the files' places on this machine or a way to fetch each one into place.

export interface SourceFile {
  /** relative, '/'-separated */
  path: string;
  sizeBytes: number;
}

interface SourceListing {
  /** how the source reads in PullStarted, e.g. "dir:/srv/models/minilm" */
  readonly description: string;
  /** the hub commit the files come from, for a hub */
  readonly resolvedCommit?: string;
  /** sorted by path, never empty */
  readonly files: readonly SourceFile[];
  /** called once the install is promoted */
  installed?(): Promise<void>;
}

/** Files on this machine: the installer copies and hashes them on its worker pool. */
export interface LocalSource extends SourceListing {
  /** where the file is on the local disk */
  localPath(file: SourceFile): string;
}

/** Files elsewhere (a hub): the source puts each one in place itself. */
export interface FetchingSource extends SourceListing {
  /**
   * Puts the verified file at `target` itself (a hub: resumable download),
   * or links `installed` there when that copy is proven identical; returns its sha256.
   */
  fetchInto(file: SourceFile, target: string, signal: AbortSignal, onBytes: (bytes: number) => void, installed?: { path: string; sha256: string }): Promise<string>;
}

export type ArtifactSource = LocalSource | FetchingSource;
