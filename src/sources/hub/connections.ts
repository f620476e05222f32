// The hub connections one pull uses at once. Each file being downloaded
// holds one; a file fetched in byte ranges borrows the idle ones for more
// ranges at once. So ranges run in parallel only when fewer files than
// connections are in flight (one large file, or the last shards of a repo),
// and never add connections to files already downloading side by side.
// Nor do they join a file its own connection brings fast enough (see
// joinBelowBytesPerSecond): ranges fetched side by side land out of order,
// and every byte past the first gap is read back from the disk to be hashed.

/**
 * 200 MB/s (1.6 Gbit/s): a connection faster than this already brings a file
 * about as fast as one pull writes and hashes it on a small machine; one
 * slower (most connections across the internet) gains from company.
 */
export const DEFAULT_PARALLEL_RANGE_BELOW_BYTES_PER_SECOND = 200_000_000;

export class Connections {
  private inUse = 0;
  private readonly listeners = new Set<() => void>();

  /**
   * `joinBelowBytesPerSecond`: idle connections join a file only once its
   * own connection, with the pull to itself, has received it slower than
   * this over a quarter of a second (Pace in download-segments.ts);
   * Infinity: at once, 0: never.
   */
  constructor(
    readonly limit: number,
    readonly joinBelowBytesPerSecond: number,
  ) {}

  /** The connection of a file being downloaded: always granted, the installer bounds the files in flight. */
  hold(): () => void {
    this.inUse += 1;
    return this.releaser();
  }

  /** Runs one file's download holding its connection, released however it ends. */
  async whileHeld<T>(download: () => Promise<T>): Promise<T> {
    const release = this.hold();
    try {
      return await download();
    } finally {
      release();
    }
  }

  /** Whether at most one connection is in use: a download holding it has the pull to itself. */
  get alone(): boolean {
    return this.inUse <= 1;
  }

  /** An idle connection, if there is one; the caller releases it when done. */
  borrow(): (() => void) | undefined {
    if (this.inUse >= this.limit) return undefined;
    this.inUse += 1;
    return this.releaser();
  }

  /** Calls `listener` each time a connection is released, until the returned function is called. */
  onRelease(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.inUse -= 1;
      for (const listener of [...this.listeners]) listener();
    };
  }
}
