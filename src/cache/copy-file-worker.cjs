// Runs in a worker thread (see file-copier.ts; plain JavaScript so that a
// worker needs no TypeScript loader of its own): copies one local file into
// the content store's ingest area in a single pass, hashing the bytes it
// writes, with plain blocking reads and writes on a buffer reused for every
// file. Each chunk's size is posted back as progress; the file is fsynced
// before it returns.
// CommonJS, not an ES module: piscina loads a task file with require() first,
// and Node's require() of an ES module can abort the whole process when the
// worker is terminated (a cancelled copy) while that module is instantiated.
"use strict";
const { createHash } = require("node:crypto");
const { closeSync, constants, fsyncSync, openSync, readSync, writeSync } = require("node:fs");

// 1 MiB: large enough that system calls cost nothing, small enough to stay in
// the CPU's caches between the read, the hash and the write (measured on a
// 2 GiB file: writes of 4 MiB chunks took ten times as long as of 1 MiB ones)
const buffer = Buffer.allocUnsafe(1024 * 1024);

/** @param {import("./file-copier.js").CopyTask} task @returns {import("./file-copier.js").CopyOutcome} */
function copyFile(task) {
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
 * @param {{ path: string }} task @returns {{ sha256: string } | { failed: string, code: string | undefined, path: string }}
 */
function hash(task) {
  try {
    return { sha256: sha256Of(task.path) };
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
    at(task.to);
    output = openSync(task.to, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o644);
    const hash = createHash("sha256");
    let total = 0;
    for (;;) {
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
    fsyncSync(output);
    return { sha256: hash.digest("hex") };
  } finally {
    if (input !== undefined) closeSync(input);
    if (output !== undefined) closeSync(output);
  }
}

/** The sha256 of a file. */
function sha256Of(path) {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    const hash = createHash("sha256");
    for (;;) {
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
