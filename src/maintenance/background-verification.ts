// Integrity over time: every --verify-interval, each stored content is read
// and hashed again on the worker pool, paced to --verify-bytes-per-second so
// pulls keep the disk and the cores. Content that no longer hashes to its
// name is condemned (see condemn-content.ts): quarantined, so it is never
// linked into a new install; every model whose install holds it becomes
// UNHEALTHY, naming the file, and, with --auto-repair, is repaired (repairs.ts).
import { readdir } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "pino";
import { errorCode, filesystemError } from "../errors.js";
import type { Runtime } from "../runtime.js";
import { condemnContent } from "../store/condemn-content.js";
import { SHA256, statBlob } from "../store/content-store.js";

export interface VerificationSettings {
  /** between the end of one pass and the start of the next */
  intervalMs: number;
  bytesPerSecond: number;
}

export const DEFAULT_VERIFY_BYTES_PER_SECOND = 100 * 2 ** 20;

/** Told what the verification does (the server's metrics). */
export interface VerificationRecorder {
  verifiedBytes(bytes: number): void;
  fullPassEnded(atMs: number): void;
}

export class BackgroundVerification {
  private readonly controller = new AbortController();
  private loop: Promise<void> | undefined;

  constructor(
    private readonly runtime: Runtime,
    private readonly settings: VerificationSettings,
    private readonly logger: Logger,
    private readonly recorders: VerificationRecorder[] = [],
    /** before each pass: what another server sharing the cache root condemned is marked here too */
    private readonly beforePass: () => Promise<void> = async () => undefined,
  ) {}

  start(): void {
    this.loop = this.run();
  }

  async close(): Promise<void> {
    this.controller.abort(new Error("the server is stopping"));
    await this.loop;
  }

  private async run(): Promise<void> {
    const signal = this.controller.signal;
    while (!signal.aborted) {
      try {
        await sleep(this.settings.intervalMs, undefined, { signal });
        await this.pass(signal);
        for (const recorder of this.recorders) recorder.fullPassEnded(Date.now());
      } catch (err) {
        if (signal.aborted) return;
        // the next pass tries again; a failing disk shows in the log each time
        this.logger.error({ err }, "the background verification of stored content failed; it runs again after --verify-interval");
      }
    }
  }

  /** One pass over every stored content, paced to the rate. */
  async pass(signal: AbortSignal): Promise<void> {
    const { store } = this.runtime;
    await this.beforePass();
    const startedAt = performance.now();
    let bytes = 0;
    for (const name of await listBlobs(store.blobsDir)) {
      if (!SHA256.test(name)) continue;
      const size = await store.withBlob(name, signal, async () => {
        const stats = await statBlob(store.blobPath(name));
        if (!stats?.isFile()) return 0;
        const actual = await this.runtime.copier.hash(store.blobPath(name), signal);
        if (actual !== name) await condemnContent(store, name, stats);
        return Number(stats.size);
      });
      bytes += size;
      for (const recorder of this.recorders) recorder.verifiedBytes(size);
      // paced over the whole pass: a large file is followed by a long rest
      const ahead = (bytes / this.settings.bytesPerSecond) * 1000 - (performance.now() - startedAt);
      if (ahead > 0) await sleep(ahead, undefined, { signal });
    }
  }
}

async function listBlobs(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (err) {
    // never created: nothing stored yet
    if (errorCode(err) === "ENOENT") return [];
    throw filesystemError("list", dir, err);
  }
}
