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
  /** sorted by path, never empty */
  readonly files: readonly SourceFile[];
  /** the bytes of one listed file; fails if they are not exactly `sizeBytes` long */
  read(file: SourceFile, signal: AbortSignal): AsyncIterable<Buffer>;
  /** where the file is on the local disk, when it is, so the installer may copy it itself */
  localPath?(file: SourceFile): string;
}
