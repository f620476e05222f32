// Runs in one worker thread (see hash-behind.ts; plain JavaScript, so the
// worker needs no TypeScript loader): keeps a sha256 per file being written
// and hashes its bytes in order: a block the writer hands over in shared
// memory is hashed in place, and bytes the writer only says have landed are
// read back from the page cache through its descriptor. Each block handed
// over is answered once the thread no longer reads it (hashed, or dropped
// with its file), so the writer can reuse it. The files with bytes to hash take turns of up to 16 MiB
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
/** @type {Map<number, { fd: number, hash: import("node:crypto").Hash, hashed: number, end: number, finishing: boolean, held: Map<number, Uint8Array>, stop?: Int32Array, failed?: string, code?: string }>} */
const jobs = new Map();
let turnsScheduled = false;

parentPort.on("message", (message) => {
  const { op, id } = message;
  if (op === "open") {
    jobs.set(id, { fd: message.fd, hash: createHash("sha256"), hashed: 0, end: 0, finishing: false, held: new Map(), stop: message.stop });
    return;
  }
  const job = jobs.get(id);
  if (op === "feed") {
    // a file already failed or closed hashes nothing more, and bytes already hashed are not hashed
    // twice (a range fetched again after its write failed: the writer then hashes the file anew): let go at once
    if (!job || job.failed !== undefined || message.position < job.hashed) parentPort.postMessage({ id, fed: message.position });
    else job.held.set(message.position, message.block);
    scheduleTurns();
    return;
  }
  if (op === "close") {
    if (job) letGoOf(id, job);
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
  let again = false;
  for (const [id, job] of jobs) {
    advance(id, job, job.hashed + TURN_BYTES);
    if (job.failed !== undefined) letGoOf(id, job);
    // what can be hashed next: the block held for the file's next byte, or bytes landed in the file
    const more = job.failed === undefined && (job.held.has(job.hashed) || job.end > job.hashed);
    if (job.finishing && !more) {
      // every block is answered before the hash is: a block held beyond the end was handed over out of order
      if (job.failed === undefined && job.held.size > 0) job.failed = `bytes from ${job.hashed} on were never handed over`;
      letGoOf(id, job);
      jobs.delete(id);
      parentPort.postMessage(job.failed === undefined ? { id, sha256: job.hash.digest("hex") } : { id, failed: job.failed, code: job.code });
    } else if (more) {
      again = true;
    }
  }
  if (again) scheduleTurns();
}

/** Answers every block `job` holds: the thread no longer reads them. */
function letGoOf(id, job) {
  for (const position of job.held.keys()) parentPort.postMessage({ id, fed: position });
  job.held.clear();
}

/** Hashes the file's next bytes up to `limit`: the block held for its position, else what has landed in the file before the next block held. */
function advance(id, job, limit) {
  while (job.failed === undefined && job.hashed < limit) {
    const block = job.held.get(job.hashed);
    if (block === undefined) {
      const next = Math.min(...job.held.keys());
      const end = Math.min(job.end, next, limit);
      if (job.hashed >= end) return;
      readTo(job, end);
      continue;
    }
    if (job.stop !== undefined && Atomics.load(job.stop, 0) !== 0) {
      job.failed = "stopped";
      return;
    }
    const position = job.hashed;
    job.held.delete(position);
    job.hash.update(block);
    job.hashed += block.length;
    parentPort.postMessage({ id, fed: position });
  }
}

function readTo(job, end) {
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
