// The hub connections one pull uses at once. Each file being downloaded
// holds one; a file fetched in byte ranges borrows the idle ones for more
// ranges at once. So ranges run in parallel only when fewer files than
// connections are in flight (one large file, or the last shards of a repo),
// and never add connections to files already downloading side by side.

export class Connections {
  private inUse = 0;
  private readonly listeners = new Set<() => void>();

  constructor(readonly limit: number) {}

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
