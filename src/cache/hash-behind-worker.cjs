// Runs in one worker thread (see hash-behind.ts; plain JavaScript, so the
// worker needs no TypeScript loader): keeps a sha256 per file being written
// and, each time the writer says how far the file's bytes have landed, reads
// them back from the page cache through the writer's descriptor and hashes
// them, in order. The files with bytes to hash take turns of up to 16 MiB
// each, so a large file hashed whole (a stored copy a forced pull checks)
// does not hold back the downloads hashed beside it, and messages that
// arrive meanwhile (a file's new end, a close) are read between turns.
"use strict";
const { createHash } = require("node:crypto");
const { readSync } = require("node:fs");
const { parentPort } = require("node:worker_threads");

// 1 MiB: the bytes stay in the CPU's caches between the read and the hash
const buffer = Buffer.allocUnsafe(1024 * 1024);
/** bytes one file hashes before the next file with bytes to hash has its turn */
const TURN_BYTES = 16 * 1024 * 1024;
/** @type {Map<number, { fd: number, hash: import("node:crypto").Hash, hashed: number, end: number, finishing: boolean, stop?: Int32Array, failed?: string, code?: string }>} */
const jobs = new Map();
let turnsScheduled = false;

parentPort.on("message", (message) => {
  const { op, id } = message;
  if (op === "open") {
    jobs.set(id, { fd: message.fd, hash: createHash("sha256"), hashed: 0, end: 0, finishing: false, stop: message.stop });
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
  if (op === "reach" || op === "finish") job.end = Math.max(job.end, message.end);
  if (op === "finish") job.finishing = true;
  scheduleTurns();
});

function scheduleTurns() {
  if (turnsScheduled) return;
  turnsScheduled = true;
  setImmediate(takeTurns);
}

/** Each file with bytes to hash hashes up to TURN_BYTES of them; a finished file gets its answer. */
function takeTurns() {
  turnsScheduled = false;
  let more = false;
  for (const [id, job] of jobs) {
    hashTo(job, Math.min(job.end, job.hashed + TURN_BYTES));
    const done = job.failed !== undefined || job.hashed >= job.end;
    if (job.finishing && done) {
      jobs.delete(id);
      parentPort.postMessage(job.failed === undefined ? { id, sha256: job.hash.digest("hex") } : { id, failed: job.failed, code: job.code });
    } else if (!done) {
      more = true;
    }
  }
  if (more) scheduleTurns();
}

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
