// Runs in a worker thread (see file-copier.ts; plain JavaScript so that a
// worker needs no TypeScript loader of its own): copies one local file into
// the content store's ingest area in a single pass, hashing the bytes it
// writes, with plain blocking reads and writes on a buffer reused for every
// file; a large file is hashed on a second thread, from what has landed in
// the copy, while this one copies (see copyHashingBehind). Each chunk's size
// is posted back as progress; the file is fsynced before it returns. A
// task the caller cancels (a flag it shares with this thread: see
// file-copier.ts) stops before its next chunk and closes what it opened:
// this thread is never terminated under a copy, which would leave its
// descriptors open in the process for good.
// CommonJS, not an ES module: piscina loads a task file with require() first,
// and Node's require() of an ES module can abort the whole process when the
// worker is terminated (a cancelled copy) while that module is instantiated.
"use strict";
const { createHash } = require("node:crypto");
const { closeSync, constants, fdatasync, fstatSync, fsync, fsyncSync, openSync, readSync, writeSync } = require("node:fs");
const { HashBehind } = require("./hash-behind-client.cjs");

// 1 MiB: large enough that system calls cost nothing, small enough to stay in
// the CPU's caches between the read, the hash and the write (measured on a
// 2 GiB file: writes of 4 MiB chunks took ten times as long as of 1 MiB ones)
const buffer = Buffer.allocUnsafe(1024 * 1024);

// the states of a task's shared flag (task.state[0]), as file-copier.ts sets them
const NOT_STARTED = 0;
const RUNNING = 1;
const CANCELLED = 2;
const CANCELLED_OUTCOME = Object.freeze({ cancelled: true });

/** Marks the task as running; false when it was cancelled before it started. */
function begin(task) {
  return Atomics.compareExchange(task.state, 0, NOT_STARTED, RUNNING) === NOT_STARTED;
}

/** Whether the caller has cancelled the task since it began. */
function cancelled(task) {
  return Atomics.load(task.state, 0) === CANCELLED;
}

/** @param {import("./file-copier.js").CopyTask} task @returns {import("./file-copier.js").CopyOutcome | Promise<import("./file-copier.js").CopyOutcome>} */
function copyFile(task) {
  if (!begin(task)) {
    task.progress.close();
    return CANCELLED_OUTCOME;
  }
  if (task.sizeBytes >= task.hashBehindFromBytes) {
    return copyHashingBehind(task)
      .catch((err) => ({ failed: err.code ?? err.message, code: err.code, path: err.at ?? task.from }))
      .finally(() => task.progress.close());
  }
  let path = task.from;
  try {
    return copyAndHash(task, (p) => (path = p));
  } catch (err) {
    return { failed: err.code ?? err.message, code: err.code, path };
  } finally {
    task.progress.close();
  }
}

/**
 * The sha256 of a file already in the cache (deep InspectCache).
 * @param {{ path: string, state: Int32Array }} task @returns {{ sha256: string } | { cancelled: true } | { failed: string, code: string | undefined, path: string }}
 */
function hash(task) {
  if (!begin(task)) return CANCELLED_OUTCOME;
  try {
    const sha256 = sha256Of(task.path, () => cancelled(task));
    return sha256 === undefined ? CANCELLED_OUTCOME : { sha256 };
  } catch (err) {
    return { failed: err.code ?? err.message, code: err.code, path: task.path };
  }
}

function copyAndHash(task, at) {
  let input;
  let output;
  try {
    at(task.from);
    input = openSync(task.from, constants.O_RDONLY | constants.O_NOFOLLOW);
    const before = fstatSync(input, { bigint: true });
    at(task.to);
    output = openSync(task.to, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o644);
    const hash = createHash("sha256");
    let total = 0;
    for (;;) {
      if (cancelled(task)) return CANCELLED_OUTCOME;
      at(task.from);
      const read = readSync(input, buffer, 0, buffer.length, null);
      if (read === 0) break;
      total += read;
      if (total > task.sizeBytes) return { changed: total };
      const chunk = buffer.subarray(0, read);
      hash.update(chunk);
      at(task.to);
      for (let offset = 0; offset < read; ) offset += writeSync(output, chunk, offset, read - offset);
      task.progress.postMessage(read);
    }
    if (total !== task.sizeBytes) return { changed: total };
    at(task.from);
    // the same size but other bytes (written in place while read): what was read may be a mix of two versions
    if (modifiedSince(before, input)) return { modified: true };
    at(task.to);
    fsyncSync(output);
    return { sha256: hash.digest("hex"), hashedBehind: false };
  } finally {
    if (input !== undefined) closeSync(input);
    if (output !== undefined) closeSync(output);
  }
}

// A large file is hashed behind its copy: while this thread reads and writes
// it (the copy stays on one core, its buffer in that core's caches), a
// thread of its own reads back what has landed in the copy, from the page
// cache, and hashes it (hash-behind-client.cjs, as for downloads). On 2
// cores a 1 GiB copy then takes about as long as its hash alone, where the
// plain loop takes the read, the hash and the write one after another. The
// copy is also handed to the disk every 64 MiB (a background fdatasync, as
// for downloads: src/cache/writeback.ts), so the final fsync has only the
// tail left to write.
const SYNC_EVERY_BYTES = 64 * 1024 * 1024;

/**
 * Copies a large file with plain blocking reads and writes, while the
 * hashing thread hashes the copy's bytes as they land: the sha256 returned
 * is that of what the copy holds, read back from it. Bytes already written
 * are synced in the background; the first failed sync fails the copy (Linux
 * may report later syncs of the file as successful).
 */
async function copyHashingBehind(task) {
  let input;
  let output;
  /** @type {HashBehind | undefined} */
  let hashing;
  let syncing;
  try {
    input = on(task.from, () => openSync(task.from, constants.O_RDONLY | constants.O_NOFOLLOW));
    const before = on(task.from, () => fstatSync(input, { bigint: true }));
    // readable too: the hashing thread reads the copy back through this descriptor
    output = on(task.to, () => openSync(task.to, constants.O_RDWR | constants.O_CREAT | constants.O_EXCL, 0o644));
    hashing = new HashBehind(output);
    let total = 0;
    let unsynced = 0;
    let syncFailure;
    for (;;) {
      if (cancelled(task)) return CANCELLED_OUTCOME;
      const read = on(task.from, () => readSync(input, buffer, 0, buffer.length, null));
      if (read === 0) break;
      total += read;
      if (total > task.sizeBytes) return { changed: total };
      for (let offset = 0; offset < read; ) offset += on(task.to, () => writeSync(output, buffer, offset, read - offset));
      hashing.reach(total);
      task.progress.postMessage(read);
      unsynced += read;
      if (unsynced >= SYNC_EVERY_BYTES) {
        // a turn of the event loop: a background sync that has ended is noticed, and the next one may start
        await new Promise((resolve) => setImmediate(resolve));
        if (!syncing && !syncFailure) {
          unsynced = 0;
          syncing = call(fdatasync, output)
            .catch((err) => {
              // kept, not thrown here: it fails the copy below
              syncFailure ??= about(err, task.to);
            })
            .finally(() => (syncing = undefined));
        }
      }
    }
    if (total !== task.sizeBytes) return { changed: total };
    if (on(task.from, () => modifiedSince(before, input))) return { modified: true };
    await syncing;
    if (syncFailure) throw syncFailure;
    // the final fsync runs on the thread pool while the hashing thread finishes; both end before the descriptors close
    const [hashed, syncError] = await Promise.all([
      hashing.finish(total).then(
        (sha256) => ({ sha256 }),
        (err) => ({ failed: about(err, task.to) }),
      ),
      call(fsync, output).then(
        () => undefined,
        (err) => about(err, task.to),
      ),
    ]);
    if (syncError) throw syncError;
    if ("failed" in hashed) throw hashed.failed;
    return { sha256: hashed.sha256, hashedBehind: true };
  } finally {
    // the descriptors are closed only once neither the hashing thread nor a sync uses them
    await hashing?.close();
    await syncing;
    if (input !== undefined) closeSync(input);
    if (output !== undefined) closeSync(output);
  }
}

/** A callback-style fs function as a promise of its result. */
function call(fn, ...args) {
  return new Promise((resolve, reject) => fn(...args, (err, result) => (err ? reject(err) : resolve(result))));
}

/** `err`, tagged with the path it is about (the outcome names that path). */
function about(err, path) {
  if (err && typeof err === "object" && err.at === undefined) err.at = path;
  return err;
}

/** Runs a blocking call on `path`, tagging what it throws with that path. */
function on(path, fn) {
  try {
    return fn();
  } catch (err) {
    throw about(err, path);
  }
}

/** Whether the source file was written to since `before` (its size or its modification time changed). */
function modifiedSince(before, fd) {
  const now = fstatSync(fd, { bigint: true });
  return now.size !== before.size || now.mtimeNs !== before.mtimeNs;
}

/** The sha256 of a file; undefined once `stop()` says so (checked before each chunk). */
function sha256Of(path, stop) {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    const hash = createHash("sha256");
    for (;;) {
      if (stop()) return undefined;
      const read = readSync(fd, buffer, 0, buffer.length, null);
      if (read === 0) break;
      hash.update(buffer.subarray(0, read));
    }
    return hash.digest("hex");
  } finally {
    closeSync(fd);
  }
}

// named tasks: "default" copies, "hash" hashes (the marker keeps piscina from wrapping the exports)
Object.defineProperty(exports, "__esModule", { value: true });
exports.default = copyFile;
exports.hash = hash;
