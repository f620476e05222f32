// Hashes a file while it is being written, off the main thread: the writer
// says how far the file's bytes have landed (written, in order from the
// start), and one worker thread shared by every download reads those bytes
// back from the page cache through the writer's descriptor and feeds them to
// the file's sha256, in order. The main thread, which receives every byte
// from the network, so never hashes any: on two cores sha256 was a third of
// its time in a hub pull. What is hashed is what the file holds, read back.
// The worker starts with the first download and lets the process exit while
// it has nothing to do.
import { Worker } from "node:worker_threads";

type Reply = { id: number; sha256: string } | { id: number; failed: string; code?: string } | { id: number; closed: true };

let worker: Worker | undefined;
const waiting = new Map<number, (reply: Reply) => void>();
let open = 0;
let nextId = 1;

function hashWorker(): Worker {
  if (worker) return worker;
  const started = new Worker(new URL("./hash-behind-worker.cjs", import.meta.url), { execArgv: [] });
  started.on("message", (reply: Reply) => {
    const answer = waiting.get(reply.id);
    waiting.delete(reply.id);
    answer?.(reply);
  });
  const gone = (error: Error) => {
    if (worker !== started) return;
    worker = undefined;
    // every file in flight learns the worker is gone; the next download starts another
    for (const [id, answer] of waiting) answer({ id, failed: error.message });
    waiting.clear();
  };
  started.on("error", gone);
  started.on("exit", (code) => gone(new Error(`the hashing thread exited with code ${code}`)));
  started.unref();
  worker = started;
  return started;
}

function hold(): void {
  if (open++ === 0) worker?.ref();
}

function letGo(): void {
  if (--open === 0) worker?.unref();
}

export class HashBehind {
  private readonly id = nextId++;
  private readonly worker: Worker;
  private sent = 0;
  private done = false;

  /** Starts hashing the file open at `fd` from its first byte; `fd` must stay open until finish() or close() resolves. */
  constructor(fd: number) {
    this.worker = hashWorker();
    hold();
    this.worker.postMessage({ op: "open", id: this.id, fd });
  }

  /** Every byte before `end` has been written: the worker may hash up to there. */
  reach(end: number): void {
    if (this.done || end <= this.sent) return;
    this.sent = end;
    this.worker.postMessage({ op: "reach", id: this.id, end });
  }

  /** The sha256 of the first `end` bytes, once the worker has hashed them all. */
  async finish(end: number): Promise<string> {
    const reply = await this.ask({ op: "finish", id: this.id, end });
    if ("sha256" in reply) return reply.sha256;
    throw Object.assign(new Error("failed" in reply ? reply.failed : "the hashing thread did not answer"), { code: "code" in reply ? reply.code : undefined });
  }

  /** Stops hashing; resolves once the worker no longer reads the descriptor. Safe to call after finish(). */
  async close(): Promise<void> {
    if (this.done) return;
    await this.ask({ op: "close", id: this.id });
  }

  private ask(message: { op: string; id: number; end?: number }): Promise<Reply> {
    if (this.done) return Promise.resolve({ id: this.id, failed: "the file's hash was already finished or closed" });
    this.done = true;
    return new Promise<Reply>((resolve) => {
      waiting.set(this.id, resolve);
      // a worker that died before this message was sent has told every waiter already
      if (worker !== this.worker) return resolve({ id: this.id, failed: "the hashing thread exited" });
      this.worker.postMessage(message);
    }).finally(letGo);
  }
}
