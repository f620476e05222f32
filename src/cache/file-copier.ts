// Copies local files into the content store's ingest area, and hashes files
// (sources before they are copied, stored content, installs for deep inspections), on worker threads (piscina), one per core, so that copying
// and hashing several files use every core while the main thread keeps
// serving gRPC. Cancelling a copy or a hash ends it within a chunk (1 MiB):
// the worker stops at a flag the two threads share and closes what it
// opened (a worker terminated mid-copy would leave its descriptors open in
// the process for good); one still waiting for a worker is taken off the
// queue; a worker that has not stopped after a grace (blocked in a read) is
// terminated. The caller then removes the staging dir.
// The pool (and piscina itself) is loaded on the first copy or hash, not when
// the server starts: a server that only serves hub pulls and shallow
// inspections never pays for it.
import { availableParallelism } from "node:os";
import { MessageChannel } from "node:worker_threads";
import type { MessagePort } from "node:worker_threads";
import type { Piscina } from "piscina";
import { ModelCacheError, filesystemError } from "../errors.js";

/** What copy-file-worker.cjs is asked to do. */
export interface CopyTask {
  from: string;
  to: string;
  sizeBytes: number;
  /** from this size on, a second thread hashes what has landed in the copy while the worker copies */
  hashBehindFromBytes: number;
  progress: MessagePort;
  /** the task's state, shared with the worker: see TaskState */
  state: Int32Array;
}

interface HashTask {
  path: string;
  state: Int32Array;
}

/** The states of a task's shared flag: the worker moves it from NOT_STARTED to RUNNING, the caller to CANCELLED. */
const enum TaskState {
  NOT_STARTED = 0,
  RUNNING = 1,
  CANCELLED = 2,
}

type HashOutcome = { sha256: string } | { cancelled: true } | { failed: string; code: string | undefined; path: string };

export type CopyOutcome =
  | { sha256: string; hashedBehind: boolean }
  | { cancelled: true }
  | { changed: number }
  | { modified: true }
  | { failed: string; code: string | undefined; path: string };

type Pool = Piscina<CopyTask | HashTask, CopyOutcome | HashOutcome>;

/**
 * Files from this size on are hashed on a second thread, from what has
 * landed in the copy, while the worker copies, and written back to the disk
 * as they are copied (copy-file-worker.cjs): one large file then keeps two
 * cores and the disk busy, where the plain loop reads, hashes and writes on
 * one core and leaves the disk idle until its final fsync. Below it the
 * second thread's hand-offs are not worth it, and a pull of several files
 * keeps every core busy with one file per worker anyway.
 */
export const HASH_BEHIND_FROM_BYTES = 64 * 1024 * 1024;

/** How long a cancelled task's worker gets to stop at its flag before piscina terminates it. */
export const STOP_GRACE_MS = 10_000;

export interface FileCopierOptions {
  threads?: number;
  /** see HASH_BEHIND_FROM_BYTES */
  hashBehindFromBytes?: number;
  /** see STOP_GRACE_MS */
  stopGraceMs?: number;
}

export class FileCopier {
  // two tasks run on it: the default export (copy) and "hash"
  private pool: Promise<Pool> | undefined;
  private closed = false;
  private readonly threads: number;
  private readonly hashBehindFromBytes: number;
  private readonly stopGraceMs: number;
  /** files copied each way since the copier started (the way is chosen by size alone) */
  readonly copied = { hashedBehind: 0, plain: 0 };

  constructor(options: FileCopierOptions = {}) {
    this.threads = options.threads ?? Math.max(1, Math.min(4, availableParallelism()));
    this.hashBehindFromBytes = options.hashBehindFromBytes ?? HASH_BEHIND_FROM_BYTES;
    this.stopGraceMs = options.stopGraceMs ?? STOP_GRACE_MS;
  }

  private start(): Promise<Pool> {
    if (this.closed) return Promise.reject(new ModelCacheError("unavailable", "the server is shutting down; try again once it is back"));
    this.pool ??= import("piscina").then(
      ({ Piscina }) =>
        new Piscina({
          filename: new URL("./copy-file-worker.cjs", import.meta.url).href,
          // plain JavaScript: no loader, so each worker stays small and starts fast
          execArgv: [],
          minThreads: 0,
          maxThreads: this.threads,
          idleTimeout: 30_000,
        }),
    );
    return this.pool;
  }

  /**
   * Copies `from` to `to` (which must not exist), reporting bytes as they are
   * written; returns the sha256 of what was written.
   */
  async copy(
    from: string,
    to: string,
    sizeBytes: number,
    signal: AbortSignal,
    onBytes: (bytes: number) => void,
  ): Promise<string> {
    const { port1, port2 } = new MessageChannel();
    let delivered = 0;
    let finished = false;
    port1.on("message", (bytes: number) => {
      if (finished) return;
      delivered += bytes;
      onBytes(bytes);
    });
    try {
      const outcome = (await this.run((state) => ({ task: { from, to, sizeBytes, hashBehindFromBytes: this.hashBehindFromBytes, progress: port2, state }, transferList: [port2] }), signal)) as Exclude<CopyOutcome, { cancelled: true }>;
      if ("sha256" in outcome) {
        // progress still in flight on the port is settled here, before the caller hears the file is done
        finished = true;
        if (delivered < sizeBytes) onBytes(sizeBytes - delivered);
        this.copied[outcome.hashedBehind ? "hashedBehind" : "plain"]++;
        return outcome.sha256;
      }
      if ("changed" in outcome) {
        throw new ModelCacheError(
          "aborted",
          `source file '${from}' changed while it was being read (listed with ${sizeBytes} bytes, read ${outcome.changed}); pull again once it is stable`,
        );
      }
      if ("modified" in outcome) {
        throw new ModelCacheError("aborted", `source file '${from}' changed while it was being read (written to during the copy); pull again once it is stable`);
      }
      throw filesystemError(outcome.path === from ? "read the source file" : "write", outcome.path, Object.assign(new Error(outcome.failed), { code: outcome.code }));
    } finally {
      finished = true;
      port1.close();
    }
  }

  /** The sha256 of a file, computed on a worker thread. */
  async hash(path: string, signal: AbortSignal): Promise<string> {
    const outcome = (await this.run((state) => ({ task: { path, state }, name: "hash" }), signal)) as Exclude<HashOutcome, { cancelled: true }>;
    if ("sha256" in outcome) return outcome.sha256;
    throw filesystemError("read", outcome.path, Object.assign(new Error(outcome.failed), { code: outcome.code }));
  }

  /**
   * Runs a task on the pool, cancelled with `signal`: one still queued is
   * taken off the queue; one a worker has begun is told to stop, through the
   * flag it shares with that worker, and ends on its own. Either way it
   * throws the signal's reason.
   */
  private async run(make: (state: Int32Array) => { task: CopyTask | HashTask; name?: string; transferList?: MessagePort[] }, signal: AbortSignal): Promise<Exclude<CopyOutcome | HashOutcome, { cancelled: true }>> {
    if (signal.aborted) throw signal.reason;
    const state = new Int32Array(new SharedArrayBuffer(Int32Array.BYTES_PER_ELEMENT));
    // piscina terminates a worker whose task is aborted: only a task no worker has begun is aborted
    // there, and one whose worker has not stopped within STOP_GRACE_MS (a read blocked on a hung
    // mount): then its descriptors are left open rather than the cancel never ending
    const dequeue = new AbortController();
    let lastResort: NodeJS.Timeout | undefined;
    const cancel = () => {
      if (Atomics.compareExchange(state, 0, TaskState.NOT_STARTED, TaskState.CANCELLED) === TaskState.NOT_STARTED) return dequeue.abort(signal.reason);
      Atomics.store(state, 0, TaskState.CANCELLED);
      lastResort = setTimeout(() => dequeue.abort(signal.reason), this.stopGraceMs).unref();
    };
    // listening before the pool is started: a cancel while it starts is not missed
    signal.addEventListener("abort", cancel, { once: true });
    try {
      const pool = await this.start();
      const { task, name, transferList } = make(state);
      const outcome = await pool.run(task, { name, transferList, signal: dequeue.signal });
      if ("cancelled" in outcome) throw signal.reason;
      return outcome;
    } catch (err) {
      throw signal.aborted ? signal.reason : err;
    } finally {
      clearTimeout(lastResort);
      signal.removeEventListener("abort", cancel);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.pool) await (await this.pool).destroy();
  }
}
