// Integrity over time: every --verify-interval, each stored content is read
// and hashed again on the worker pool, paced to --verify-bytes-per-second so
// pulls keep the disk and the cores. Content that no longer hashes to its
// name is removed from the store, so it is never linked into a new install;
// every model whose install uses it becomes UNHEALTHY, naming the file, and,
// with --auto-repair, is pulled again in the background from where its
// install came from: the local directory it was installed from, or its hub
// or object store when that can be reached.
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "pino";
import { MANIFEST_FILE } from "../cache/layout.js";
import { readManifest } from "../cache/read-manifest.js";
import { ModelCacheError, errorCode, filesystemError } from "../errors.js";
import { originDirectory } from "../pull/origin-directory.js";
import { pullModel } from "../pull/pull-model.js";
import { recordCorrupt } from "../registry/record-install.js";
import type { Runtime } from "../runtime.js";
import { SHA256, statBlob } from "./content-store.js";
import { removeBlob } from "./verify-content.js";

export interface VerificationSettings {
  /** between the end of one pass and the start of the next */
  intervalMs: number;
  bytesPerSecond: number;
  autoRepair: boolean;
}

export const DEFAULT_VERIFY_BYTES_PER_SECOND = 100 * 2 ** 20;

/** Told what the verification does (the server's metrics). */
export interface VerificationRecorder {
  verifiedBytes(bytes: number): void;
  corruptFound(): void;
  fullPassEnded(atMs: number): void;
  repairEnded?(model: string, result: "ok" | "failed"): void;
}

export class BackgroundVerification {
  private readonly controller = new AbortController();
  private loop: Promise<void> | undefined;
  private readonly repairs = new Set<Promise<void>>();

  constructor(
    private readonly runtime: Runtime,
    private readonly settings: VerificationSettings,
    private readonly logger: Logger,
    private readonly recorders: VerificationRecorder[] = [],
  ) {}

  start(): void {
    this.loop = this.run();
  }

  async close(): Promise<void> {
    this.controller.abort(new Error("the server is stopping"));
    await this.loop;
    await Promise.all(this.repairs);
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
    const startedAt = performance.now();
    let bytes = 0;
    for (const name of await listBlobs(store.blobsDir)) {
      if (!SHA256.test(name)) continue;
      const size = await store.withBlob(name, signal, async () => {
        const stats = await statBlob(store.blobPath(name));
        if (!stats?.isFile()) return 0;
        const actual = await this.runtime.copier.hash(store.blobPath(name), signal);
        if (actual !== name) await this.corrupt(name, Number(stats.size));
        return Number(stats.size);
      });
      bytes += size;
      for (const recorder of this.recorders) recorder.verifiedBytes(size);
      // paced over the whole pass: a large file is followed by a long rest
      const ahead = (bytes / this.settings.bytesPerSecond) * 1000 - (performance.now() - startedAt);
      if (ahead > 0) await sleep(ahead, undefined, { signal });
    }
  }

  /** Called holding the blob's lock. */
  private async corrupt(sha256: string, sizeBytes: number): Promise<void> {
    const { registry, layout, store } = this.runtime;
    await removeBlob(store, sha256, sizeBytes);
    for (const recorder of this.recorders) recorder.corruptFound();
    const affected: { name: string; path: string }[] = [];
    for (const record of await registry.models.values().all()) {
      if (!record.install) continue;
      let files;
      try {
        files = readManifest(join(layout.modelDir(record.name), MANIFEST_FILE)).files;
      } catch (err) {
        // a missing or unreadable manifest is the inspection's finding, not this one's: the install names no content
        if (errorCode(err) === "ENOENT" || err instanceof ModelCacheError) continue;
        throw err;
      }
      const file = files.find((f) => f.sha256 === sha256);
      if (!file) continue;
      if (await recordCorrupt(registry, record.name, { path: file.path, sha256, installedAtMs: record.install.installedAtMs })) affected.push({ name: record.name, path: file.path });
    }
    this.logger.error({ sha256, models: affected }, "stored content no longer matches its sha256: removed from the store; the models using it are UNHEALTHY until pulled again");
    if (this.settings.autoRepair) for (const { name } of affected) this.repair(name);
  }

  private repair(name: string): void {
    const runtime = this.runtime;
    const record = runtime.registry.models.get(name);
    const work = (async () => {
      const model = await record;
      if (!model) return;
      // from where the install came from: a local fine-tune is never swapped for its hub's files
      let fixtureDir: string | undefined;
      try {
        fixtureDir = await originDirectory(runtime, model);
      } catch (err) {
        this.logger.warn({ model: name, err }, `not repaired automatically: ${(err as Error).message}`);
        return;
      }
      if (fixtureDir === undefined && (runtime.fixtureDir !== undefined || runtime.hub.offline)) {
        this.logger.warn({ model: name }, "not repaired automatically: the server pulls from its --fixture-dir or is offline; pull it again");
        return;
      }
      this.logger.info({ model: name, fixtureDir }, `repairing: pulling the model again from ${fixtureDir === undefined ? "its source" : `the directory it was installed from, '${fixtureDir}'`}`);
      try {
        for await (const event of pullModel(runtime, { name, fixtureDir: fixtureDir ?? "", credentialAlias: "", force: true, detach: true }, this.controller.signal)) void event;
        this.logger.info({ model: name }, "repaired: the model was pulled again and is healthy");
        for (const recorder of this.recorders) recorder.repairEnded?.(name, "ok");
      } catch (err) {
        if (this.controller.signal.aborted) return;
        this.logger.warn({ model: name, err }, "the repair pull failed: the model stays UNHEALTHY until it is pulled again");
        for (const recorder of this.recorders) recorder.repairEnded?.(name, "failed");
      }
    })();
    this.repairs.add(work);
    void work.finally(() => this.repairs.delete(work));
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
