// Runs in one worker thread (see hash-behind.ts; plain JavaScript, so the
// worker needs no TypeScript loader): keeps a sha256 per file being written
// and, each time the writer says how far the file's bytes have landed, reads
// them back from the page cache through the writer's descriptor and hashes
// them, in order. Reads and hashes are blocking: messages that arrive
// meanwhile wait their turn, which keeps every file's hash in order.
"use strict";
const { createHash } = require("node:crypto");
const { readSync } = require("node:fs");
const { parentPort } = require("node:worker_threads");

// 1 MiB: the bytes stay in the CPU's caches between the read and the hash
const buffer = Buffer.allocUnsafe(1024 * 1024);
/** @type {Map<number, { fd: number, hash: import("node:crypto").Hash, hashed: number, stop?: Int32Array, failed?: string, code?: string }>} */
const jobs = new Map();

parentPort.on("message", (message) => {
  const { op, id } = message;
  if (op === "open") {
    jobs.set(id, { fd: message.fd, hash: createHash("sha256"), hashed: 0, stop: message.stop });
    return;
  }
  const job = jobs.get(id);
  if (op === "close") {
    jobs.delete(id);
    // from here on the writer may close the descriptor: nothing reads it any more
    parentPort.postMessage({ id, closed: true });
    return;
  }
  if (!job) return;
  if (op === "reach" || op === "finish") hashTo(job, message.end);
  if (op === "finish") {
    jobs.delete(id);
    parentPort.postMessage(job.failed === undefined ? { id, sha256: job.hash.digest("hex") } : { id, failed: job.failed, code: job.code });
  }
});

function hashTo(job, end) {
  while (job.failed === undefined && job.hashed < end) {
    // the client may stop a file's hash while the thread reads it (a cancelled pull): checked at every 1 MiB
    if (job.stop !== undefined && Atomics.load(job.stop, 0) !== 0) {
      job.failed = "stopped";
      return;
    }
    try {
      const read = readSync(job.fd, buffer, 0, Math.min(buffer.length, end - job.hashed), job.hashed);
      if (read === 0) {
        job.failed = `the file ended at ${job.hashed} bytes, before ${end}`;
        return;
      }
      job.hash.update(buffer.subarray(0, read));
      job.hashed += read;
    } catch (err) {
      job.failed = err.message;
      job.code = err.code;
    }
  }
}
