// What a pull installs from: a listing of files with their sizes, and a way
// to read each one as a stream of chunks.

export interface SourceFile {
  /** relative, '/'-separated */
  path: string;
  sizeBytes: number;
}

export interface ArtifactSource {
  /** how the source reads in PullStarted, e.g. "dir:/srv/models/minilm" */
  readonly description: string;
  /** the hub commit the files come from, for a hub */
  readonly resolvedCommit?: string;
  /** sorted by path, never empty */
  readonly files: readonly SourceFile[];
  /** the bytes of one listed file; fails if they are not exactly `sizeBytes` long */
  read(file: SourceFile, signal: AbortSignal): AsyncIterable<Buffer>;
  /** where the file is on the local disk, when it is, so the installer may copy it itself */
  localPath?(file: SourceFile): string;
  /**
   * Puts the verified file at `target` itself (a hub: resumable download),
   * or links `installed` there when that copy is proven identical; returns its sha256.
   */
  fetchInto?(file: SourceFile, target: string, signal: AbortSignal, onBytes: (bytes: number) => void, installed?: { path: string; sha256: string }): Promise<string>;
  /** called once the install is promoted */
  installed?(): Promise<void>;
}
