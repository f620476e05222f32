// A PullJob is one model's pull, shared by every client that asks for it.
// It runs on its own (queue slot, model lock, install, registry stamp) and
// fans its events out to subscriptions; a client that attaches late first
// gets a replay (started, the files so far, the latest progress), then the
// live events and the same result. When the last client leaves, the job is
// cancelled unless a client asked for it to be detached.
import type { HfCacheView } from "../hf-cache-view/hf-cache-view.js";
import { rm } from "node:fs/promises";
import { type InstallObserver, installArtifacts, manifestIn } from "../cache/install-artifacts.js";
import type { FileCopier } from "../cache/file-copier.js";
import type { CacheLayout } from "../cache/layout.js";
import type { Manifest } from "../cache/manifest.js";
import type { ModelLocks } from "../cache/model-lock.js";
import { ModelCacheError } from "../errors.js";
import type { ContentStore } from "../store/content-store.js";
import { plannedReuse } from "./planned-reuse.js";
import { condemnedFileIn } from "../store/condemn-content.js";
import type { ModelRecord } from "../registry/model-record.js";
import type { Registry } from "../registry/open-registry.js";
import { recordInstall } from "../registry/record-install.js";
import type { ArtifactSource, SourceFile } from "../sources/artifact-source.js";
import type { PullEvent } from "./pull-event.js";
import type { PullQueue } from "./pull-queue.js";
import { Subscription } from "./subscription.js";

export type PullResult = "ok" | "failed" | "cancelled";

/** Told when each job starts its transfer and how it ended (the server's metrics and log). */
export interface PullRecorder {
  pullStarted?(model: string, started: { source: string; fileCount: number; totalBytes: number }): void;
  /** `reusedBytes`: the bytes of files taken from the content store */
  pullEnded(model: string, ended: { result: PullResult; bytes: number; seconds: number; reusedBytes: number; peerBytes: number; error?: unknown }): void;
}

export interface PullJobSettings {
  registry: Registry;
  layout: CacheLayout;
  locks: ModelLocks;
  queue: PullQueue;
  /** the least time between two file_progress events of one pull */
  progressIntervalMs: number;
  /** files copied at once */
  fileConcurrency: number;
  /** copies and hashes local files on worker threads */
  copier: FileCopier;
  /** where every file's content is kept once */
  store: ContentStore;
  /** the Hugging Face cache view (--hf-cache-dir), told of each install before the one it replaces releases its content */
  view?: HfCacheView;
  recorders?: PullRecorder[];
  /** makes room for what a pull adds before it fetches anything (the store's content it will link is held for it), and holds it while the pull runs */
  capacity?: {
    admit(name: string, room: { files: readonly SourceFile[]; replaced?: Manifest }, signal: AbortSignal): Promise<{ evicted: string[]; committed(bytes: number): void; extend(bytes: number, slack: number, signal: AbortSignal): Promise<number>; release(): void }>;
  };
}

type Event<T extends PullEvent["type"]> = Extract<PullEvent, { type: T }>;

interface FileState {
  started: Event<"file_started">;
  bytesDone: number;
  completed?: Event<"file_completed">;
}

export class PullJob implements InstallObserver {
  readonly done: Promise<void>;
  private readonly controller = new AbortController();
  private readonly subscribers = new Set<Subscription>();
  private detached = false;
  private queued: Event<"queued"> | undefined;
  private started: Event<"started"> | undefined;
  private readonly files = new Map<string, FileState>();
  private totalBytesDone = 0;
  /** files an archive unpacked: their bytes were counted as the archive's transfer */
  private readonly unpacked = new Set<string>();
  private reusedBytes = 0;
  private admission: Awaited<ReturnType<NonNullable<PullJobSettings["capacity"]>["admit"]>> | undefined;
  private outcome: { completed: Event<"completed"> } | { error: unknown } | undefined;
  private readonly pendingProgress = new Set<string>();
  private progressTimer: NodeJS.Timeout | undefined;
  private lastProgressAt = 0;
  private readonly startedAt = performance.now();

  /** fixed once the job begins staging: a force asked for later cannot apply */
  private forceSettled = false;
  /** set once the job moves its install into place: what is left (recording it) is short, under the model's lock */
  private promoting = false;

  constructor(
    private readonly settings: PullJobSettings,
    readonly model: ModelRecord,
    readonly source: ArtifactSource,
    /** reuse nothing from the current install */
    private forced: boolean,
  ) {
    this.done = this.run();
  }

  get force(): boolean {
    return this.forced;
  }

  /** Makes the job reuse nothing, if it has not begun staging; whether it now will. */
  requireForce(): boolean {
    if (!this.forceSettled) this.forced = true;
    return this.forced;
  }

  /**
   * Whether a change to the model (DropCache, UnregisterModel) would race the
   * job: not once the job is promoting its install, which may already show as
   * installed; the change then waits for the model's lock, which the job
   * holds until its install is recorded.
   */
  get racesChanges(): boolean {
    return !this.outcome && !this.promoting;
  }

  get state(): "queued" | "running" | "finished" {
    return this.outcome ? "finished" : this.started ? "running" : "queued";
  }

  get subscriberCount(): number {
    return this.subscribers.size;
  }

  /** The job's events for one client, from a replay of what happened so far to the end. */
  attach(detach: boolean, signal: AbortSignal): AsyncGenerator<PullEvent> {
    if (detach) this.detached = true;
    const subscription = new Subscription();
    this.replayTo(subscription);
    if (this.outcome) {
      subscription.end("error" in this.outcome ? this.outcome.error : undefined);
    } else {
      this.subscribers.add(subscription);
    }
    const leave = () => {
      this.subscribers.delete(subscription);
      if (this.subscribers.size === 0 && !this.detached && !this.outcome) {
        this.abort(new ModelCacheError("cancelled", `every client of the pull of model '${this.model.name}' has gone`));
      }
    };
    return (async function* () {
      try {
        yield* subscription.events(signal);
      } finally {
        leave();
      }
    })();
  }

  abort(reason: unknown): void {
    this.controller.abort(reason);
  }

  fileStarted(file: SourceFile, index: number): void {
    const started: Event<"file_started"> = { type: "file_started", path: file.path, index, sizeBytes: file.sizeBytes };
    this.files.set(file.path, { started, bytesDone: 0 });
    this.broadcast(started);
  }

  bytesWritten(file: SourceFile, bytes: number): void {
    const state = this.files.get(file.path)!;
    if (state.completed) return;
    state.bytesDone += bytes;
    if (!this.unpacked.has(file.path)) this.totalBytesDone += bytes;
    this.pendingProgress.add(file.path);
    this.scheduleProgress();
  }

  fileCompleted(file: SourceFile, sha256: string, reused: boolean): void {
    const completed: Event<"file_completed"> = { type: "file_completed", path: file.path, sha256, sizeBytes: file.sizeBytes, reused };
    this.files.get(file.path)!.completed = completed;
    if (reused) this.reusedBytes += file.sizeBytes;
    // what it stored now counts as stored: its reservation shrinks by as much (an archive's entry did when it was unpacked)
    else if (!this.unpacked.has(file.path)) this.admission?.committed(file.sizeBytes);
    this.pendingProgress.delete(file.path);
    this.broadcast(completed);
  }

  async reserve(bytes: number, slack: number): Promise<number> {
    return (await this.admission?.extend(bytes, slack, this.controller.signal)) ?? bytes + slack;
  }

  written(bytes: number): void {
    this.admission?.committed(bytes);
  }

  private async run(): Promise<void> {
    const { settings, model, source } = this;
    const signal = this.controller.signal;
    let outcome: NonNullable<PullJob["outcome"]>;
    try {
      const leaveQueue = await settings.queue.admit(signal, (position, running) => {
        this.queued = { type: "queued", position, running };
        this.broadcast(this.queued);
      });
      try {
        const release = await settings.locks.acquire(model.name, signal);
        try {
          // the record as it is now: an UnregisterModel may have gone first
          const current = await this.registeredRecord();
          this.forceSettled = true;
          const force = this.forced;
          if (force) await rm(settings.layout.partialDir(model.name), { recursive: true, force: true });
          // an archive (an OCI .tar layer) counts as one file of its blob's size until it is unpacked: its entries are not known before
          const archives = ("fetch" in source && source.archives) || [];
          const transfers = [...source.files, ...archives];
          const totalBytes = transfers.reduce((sum, f) => sum + f.sizeBytes, 0);
          // a directory's files must be read before the store can know them: each file's `reused` tells
          const reusedBytes = "fetch" in source && !force ? await plannedReuse(settings.store, source.files) : 0;
          // room for what the store does not hold yet; a directory's files are taken as the install's they replace when path and size match
          const replaced = current.install ? manifestIn(settings.layout.modelDir(model.name)) : undefined;
          this.admission = await settings.capacity?.admit(model.name, { files: transfers, replaced }, signal);
          this.started = { type: "started", source: source.description, fileCount: transfers.length, totalBytes, reusedBytes, evictedModels: this.admission?.evicted ?? [] };
          this.broadcast(this.started);
          for (const recorder of settings.recorders ?? []) recorder.pullStarted?.(model.name, this.started);
          // fetched and unpacked here, holding the lock, so PruneCache leaves the download alone and its bytes are this pull's events
          const files = "fetch" in source && source.unpack ? await source.unpack(signal, this) : source.files;
          if (files !== source.files) {
            const listed = new Set(source.files.map((f) => f.path));
            for (const file of files) if (!listed.has(file.path)) this.unpacked.add(file.path);
          }
          const manifest = await installArtifacts({
            layout: settings.layout,
            name: model.name,
            source: files === source.files ? source : { ...source, files },
            model: { source: current.source, revision: current.revision, task: current.task, engine: current.engine, dimensions: current.dimensions },
            signal,
            observer: this,
            // numbered after the archives' transfers, so each of the pull's transfers has an index of its own
            firstIndex: archives.length,
            concurrency: settings.fileConcurrency,
            copier: settings.copier,
            store: settings.store,
            force,
            beforePromote: async () => {
              await this.registeredRecord();
              this.promoting = true;
            },
            promoted: settings.view && ((installed) => settings.view!.installed(model.name, installed)),
          });
          const cacheDir = settings.layout.modelDir(model.name);
          // content found corrupt while this pull ran may be linked in it: then the install is recorded UNHEALTHY, and repaired
          const condemned = await condemnedFileIn(settings.store, cacheDir, manifest.files);
          await recordInstall(
            settings.registry,
            model.name,
            { cacheDir, installedAtMs: manifest.installedAtMs, sizeBytes: manifest.totalSizeBytes, resolvedCommit: manifest.resolvedCommit },
            source.directory,
            condemned && { ...condemned, installedAtMs: manifest.installedAtMs },
          );
          outcome = { completed: { type: "completed", cacheDir, manifest, reusedBytes: this.reusedBytes, peerBytes: this.peerBytes() } };
        } catch (err) {
          // still under the lock: nobody else writes the model's partial dir
          await source.abandoned?.();
          throw err;
        } finally {
          this.admission?.release();
          await release();
        }
      } finally {
        leaveQueue();
      }
    } catch (err) {
      outcome = { error: signal.aborted ? signal.reason : err };
    }
    // clients hear the end once the model's lock is free, so what they do next finds it so
    this.finish(outcome);
  }

  /** Verified bytes peers brought instead of the source (0 from a source that asks none). */
  private peerBytes(): number {
    return "fetch" in this.source ? (this.source.peerBytes?.() ?? 0) : 0;
  }

  /** The model's record, read again; fails when the model is no longer registered. */
  private async registeredRecord(): Promise<ModelRecord> {
    const record = await this.settings.registry.models.get(this.model.name);
    if (record === undefined) {
      throw new ModelCacheError("not_found", `local AI model '${this.model.name}' was unregistered while its pull waited; nothing was installed`);
    }
    return record;
  }

  private finish(outcome: NonNullable<PullJob["outcome"]>): void {
    const result: PullResult = "completed" in outcome ? "ok" : this.controller.signal.aborted ? "cancelled" : "failed";
    const ended = { result, bytes: this.totalBytesDone, reusedBytes: this.reusedBytes, peerBytes: this.peerBytes(), seconds: (performance.now() - this.startedAt) / 1000, error: "error" in outcome ? outcome.error : undefined };
    for (const recorder of this.settings.recorders ?? []) recorder.pullEnded(this.model.name, ended);
    clearTimeout(this.progressTimer);
    this.pendingProgress.clear();
    this.outcome = outcome;
    for (const subscription of this.subscribers) {
      if ("completed" in outcome) {
        subscription.push(outcome.completed);
        subscription.end();
      } else {
        subscription.end(outcome.error);
      }
    }
  }

  private replayTo(subscription: Subscription): void {
    if (!this.started) {
      if (this.queued) subscription.push(this.queued);
      return;
    }
    subscription.push(this.started);
    for (const file of this.files.values()) {
      subscription.push(file.started);
      if (file.completed) subscription.push(file.completed);
      else if (file.bytesDone > 0) subscription.push(this.progressOf(file));
    }
    if (this.outcome && "completed" in this.outcome) subscription.push(this.outcome.completed);
  }

  private broadcast(event: PullEvent): void {
    for (const subscription of this.subscribers) subscription.push(event);
  }

  private progressOf(file: FileState): Event<"file_progress"> {
    return {
      type: "file_progress",
      path: file.started.path,
      bytesDone: file.bytesDone,
      sizeBytes: file.started.sizeBytes,
      totalBytesDone: this.totalBytesDone,
      totalBytes: this.started?.totalBytes ?? 0,
    };
  }

  /** At most one file_progress per interval, taking the files in flight in turn. */
  private scheduleProgress(): void {
    if (this.progressTimer) return;
    const wait = this.lastProgressAt + this.settings.progressIntervalMs - Date.now();
    if (wait <= 0) this.emitProgress();
    else this.progressTimer = setTimeout(() => this.emitProgress(), wait);
  }

  private emitProgress(): void {
    this.progressTimer = undefined;
    const [path] = this.pendingProgress;
    if (path === undefined || this.outcome) return;
    this.pendingProgress.delete(path);
    const file = this.files.get(path)!;
    if (file.bytesDone < file.started.sizeBytes) {
      this.lastProgressAt = Date.now();
      this.broadcast(this.progressOf(file));
    }
    if (this.pendingProgress.size > 0) this.scheduleProgress();
  }
}
