// Follows the server's --models-file: applies it at start, when it changes,
// and when asked (SIGHUP). The file's directory is watched rather than the
// file, so that an editor replacing the file by a rename, and Kubernetes
// swapping a ConfigMap's symlinks, are both seen; events are debounced and an
// apply runs only when the text differs from the last one applied. An invalid
// version changes nothing: the last good state stays, the error is logged and
// counted. A model that cannot change now (leased) is logged and the file
// applied again later, while the rest is applied at once.
import { type FSWatcher, watch } from "node:fs";
import { basename, dirname } from "node:path";
import type { Logger } from "pino";
import { ModelCacheError } from "../errors.js";
import type { Runtime } from "../runtime.js";
import { applyModels } from "./apply-models.js";
// parse-models-file.js (and the YAML parser) is loaded only by a server that follows a models file
import { BackgroundPulls } from "./pull-listed-models.js";

const FIRST_RETRY_MS = 1_000;
const LAST_RETRY_MS = 5 * 60_000;

export interface ModelsFileRecorder {
  modelsFileApplied(atMs: number): void;
  modelsFileFailed(): void;
  /** the file holds again the text last applied (an edit that failed was undone): nothing is left to apply */
  modelsFileBackToApplied(): void;
}

export interface FollowOptions {
  path: string;
  logger: Logger;
  recorders: ModelsFileRecorder[];
  /** quiet time after the last change before the file is read (default 500 ms) */
  debounceMs?: number;
  /** first delay before a failed background pull, or a model the apply could not change, is tried again (default 1 s) */
  retryMs?: number;
}

export class ModelsFileFollower {
  private readonly controller = new AbortController();
  private readonly pulls: BackgroundPulls;
  private watcher: FSWatcher | undefined;
  private timer: NodeJS.Timeout | undefined;
  private lastApplied: string | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private retryTimer: NodeJS.Timeout | undefined;
  private retryDelay: number;

  constructor(
    private readonly runtime: Runtime,
    private readonly options: FollowOptions,
  ) {
    this.pulls = new BackgroundPulls(runtime, options.logger, this.controller.signal, options.retryMs);
    this.retryDelay = options.retryMs ?? FIRST_RETRY_MS;
  }

  /** Applies the file once; an invalid or unreadable file throws (the server must not start on it). */
  async start(): Promise<void> {
    // read first, so that a missing file is reported as such; then watch before
    // applying, so that a change made during the first apply is applied after it
    const text = await this.read();
    this.watchDirectory();
    const first = this.apply(text);
    this.queue = first.catch(() => undefined);
    await first;
  }

  private watchDirectory(): void {
    this.watcher = watch(dirname(this.options.path), { persistent: false }, () => {
      // a ConfigMap swaps a symlink named ..data, not the file: any change in the directory may be one
      this.schedule();
    });
    this.watcher.on("error", (err) => this.options.logger.error({ file: this.options.path, error: err.message }, "the models file's directory can no longer be watched; send SIGHUP to apply it"));
  }

  /** Reads and applies the file again even when its text is unchanged (SIGHUP). Never throws: errors are logged and counted. */
  reload(): Promise<void> {
    return this.enqueue(true);
  }

  /** Background pull loops still running. */
  get backgroundPulls(): number {
    return this.pulls.running;
  }

  close(): void {
    clearTimeout(this.timer);
    clearTimeout(this.retryTimer);
    this.watcher?.close();
    this.controller.abort(new ModelCacheError("unavailable", "the server is shutting down"));
  }

  private schedule(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.enqueue(false), this.options.debounceMs ?? 500);
  }

  /** One read-and-apply at a time, in order. */
  private enqueue(force: boolean): Promise<void> {
    const next = this.queue.then(() => this.follow(force));
    this.queue = next;
    return next;
  }

  private async follow(force: boolean): Promise<void> {
    if (this.controller.signal.aborted) return;
    const { logger, path } = this.options;
    try {
      const text = await this.read();
      if (!force && text === this.lastApplied) {
        for (const recorder of this.options.recorders) recorder.modelsFileBackToApplied();
        return;
      }
      await this.apply(text);
    } catch (err) {
      if (this.controller.signal.aborted) return;
      for (const recorder of this.options.recorders) recorder.modelsFileFailed();
      logger.error({ file: path, error: err instanceof Error ? err.message : String(err) }, "the models file was not applied; the models stay as the last good version left them");
    }
  }

  private async read(): Promise<string> {
    const { readModelsFileText } = await import("./parse-models-file.js");
    return readModelsFileText(this.options.path);
  }

  private async apply(text: string): Promise<void> {
    const { parseModelsFile } = await import("./parse-models-file.js");
    const specs = parseModelsFile(text, this.options.path);
    const changes = await applyModels(this.runtime, specs, { scope: { by: "models-file" }, dryRun: false, signal: this.controller.signal });
    this.lastApplied = text;
    for (const recorder of this.options.recorders) recorder.modelsFileApplied(Date.now());
    const changed = changes.filter((c) => c.action !== "unchanged" && c.failed === undefined);
    const failed = changes.filter((c) => c.failed !== undefined);
    this.options.logger.info(
      { file: basename(this.options.path), models: specs.length, changes: changed.map((c) => ({ name: c.name, action: c.action, ...(c.changedFields.length ? { fields: c.changedFields } : {}) })) },
      "applied the models file",
    );
    for (const change of failed) {
      this.options.logger.warn({ file: basename(this.options.path), model: change.name, action: change.action, error: change.failed, retryInSeconds: this.retryDelay / 1000 }, "a model of the models file could not be changed now; the rest was applied, and this one is tried again later");
    }
    this.retryLater(failed.length > 0);
    await this.pulls.afterApply(changes.filter((c) => c.failed === undefined));
  }

  /** Applies the file again after a growing delay while some of its changes could not be made. */
  private retryLater(needed: boolean): void {
    clearTimeout(this.retryTimer);
    if (!needed) {
      this.retryDelay = this.options.retryMs ?? FIRST_RETRY_MS;
      return;
    }
    this.retryTimer = setTimeout(() => void this.enqueue(true), this.retryDelay);
    this.retryDelay = Math.min(this.retryDelay * 2, LAST_RETRY_MS);
  }
}
