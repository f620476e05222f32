// The hashing thread's client (see hash-behind.ts for why it exists): one
// worker thread (hash-behind-worker.cjs) shared by every file hashed in this
// thread, told how far each file has landed and asked for its sha256 at the
// end. CommonJS, like the copy worker that uses it too (copy-file-worker.cjs:
// piscina loads a task file with require(), and require() of an ES module can
// abort the process when such a worker is terminated); hash-behind.ts gives
// it its types for the rest of the server.
"use strict";
const { join } = require("node:path");
const { Worker } = require("node:worker_threads");

/** @typedef {{ id: number, sha256: string } | { id: number, failed: string, code?: string } | { id: number, closed: true }} Reply */

/** @type {Worker | undefined} */
let worker;
/** @type {Map<number, (reply: Reply) => void>} */
const waiting = new Map();
/** the blocks each file handed over, by position, until the thread lets go of them @type {Map<number, Map<number, () => void>>} */
const feeding = new Map();

/** Every block of file `id` is let go of (its file answered, or the thread gone). @param {number} id */
function letGoOfAll(id) {
  for (const resolve of feeding.get(id)?.values() ?? []) resolve();
  feeding.delete(id);
}
let open = 0;
let nextId = 1;

function hashWorker() {
  if (worker) return worker;
  const started = new Worker(join(__dirname, "hash-behind-worker.cjs"), { execArgv: [] });
  started.on("message", (/** @type {Reply | { id: number, fed: number }} */ reply) => {
    if ("fed" in reply) {
      const blocks = feeding.get(reply.id);
      blocks?.get(reply.fed)?.();
      blocks?.delete(reply.fed);
      return;
    }
    // the thread answers every block of a file before the file itself; letting go of any left is only a safeguard
    letGoOfAll(reply.id);
    const answer = waiting.get(reply.id);
    waiting.delete(reply.id);
    answer?.(reply);
  });
  const gone = (/** @type {Error} */ error) => {
    if (worker !== started) return;
    worker = undefined;
    // every file in flight learns the worker is gone; the next file starts another
    for (const [id, answer] of waiting) answer({ id, failed: error.message });
    waiting.clear();
    for (const id of [...feeding.keys()]) letGoOfAll(id);
  };
  started.on("error", gone);
  started.on("exit", (code) => gone(new Error(`the hashing thread exited with code ${code}`)));
  started.unref();
  worker = started;
  return started;
}

// the worker keeps its thread's process alive only while a file is being hashed
function hold() {
  if (open++ === 0) worker?.ref();
}

function letGo() {
  if (--open === 0) worker?.unref();
}

class HashBehind {
  /**
   * Starts hashing the file open at `fd` from its first byte; `fd` must stay
   * open until finish() or close() resolves. A `stop` flag (shared memory)
   * set to non-zero ends the reading within 1 MiB, and finish() fails.
   * @param {number} fd @param {Int32Array} [stop]
   */
  constructor(fd, stop) {
    this.id = nextId++;
    this.worker = hashWorker();
    this.sent = 0;
    this.done = false;
    /** the answer to the one message asked (finish or close), once asked @type {Promise<Reply> | undefined} */
    this.asked = undefined;
    hold();
    this.worker.postMessage({ op: "open", id: this.id, fd, stop });
  }

  /** Every byte before `end` has been written: the worker may hash up to there. @param {number} end */
  reach(end) {
    if (this.done || end <= this.sent) return;
    this.sent = end;
    this.worker.postMessage({ op: "reach", id: this.id, end });
  }

  /**
   * Hands over the file's bytes from `position` on: the first `length` bytes
   * of `block` (shared memory), which the thread hashes in place. Every byte
   * before `position` must have been handed over or reached first. Resolves
   * once the thread no longer reads `block` (hashed, or let go of with a
   * stopped, failed or closed file); never rejects: finish() tells how the
   * hash ended.
   * @param {Buffer} block @param {number} length @param {number} position @returns {Promise<void>}
   */
  feed(block, length, position) {
    if (this.done || worker !== this.worker) return Promise.resolve();
    return new Promise((resolve) => {
      let blocks = feeding.get(this.id);
      if (!blocks) feeding.set(this.id, (blocks = new Map()));
      blocks.set(position, resolve);
      this.worker.postMessage({ op: "feed", id: this.id, block: block.subarray(0, length), position });
    });
  }

  /** The sha256 of the first `end` bytes, once the worker has hashed them all. @param {number} end @returns {Promise<string>} */
  async finish(end) {
    const reply = await this.ask({ op: "finish", id: this.id, end });
    if ("sha256" in reply) return reply.sha256;
    throw Object.assign(new Error("failed" in reply ? reply.failed : "the hashing thread did not answer"), { code: "code" in reply ? reply.code : undefined });
  }

  /**
   * Stops hashing; resolves once the worker no longer reads the descriptor.
   * Safe to call after finish(): then it waits for finish's answer, the
   * worker reading the file until it gives it.
   * @returns {Promise<void>}
   */
  async close() {
    if (this.done) {
      await this.asked;
      return;
    }
    await this.ask({ op: "close", id: this.id });
  }

  /** @param {{ op: string, id: number, end?: number }} message @returns {Promise<Reply>} */
  ask(message) {
    if (this.done) return Promise.resolve({ id: this.id, failed: "the file's hash was already finished or closed" });
    this.done = true;
    this.asked = new Promise((/** @type {(reply: Reply) => void} */ resolve) => {
      waiting.set(this.id, resolve);
      // a worker that died before this message was sent has told every waiter already
      if (worker !== this.worker) return resolve({ id: this.id, failed: "the hashing thread exited" });
      this.worker.postMessage(message);
    }).finally(letGo);
    return this.asked;
  }
}

module.exports = { HashBehind };
