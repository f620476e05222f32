// Runs in a worker thread (see file-copier.ts): copies one local file into
// the staging dir in a single pass, hashing the bytes it writes, with plain
// blocking reads and writes on a buffer reused for every file. Each chunk's
// size is posted back as progress; the file is fsynced before it returns.
import { createHash } from "node:crypto";
import { closeSync, constants, fsyncSync, openSync, readSync, writeSync } from "node:fs";
import type { MessagePort } from "node:worker_threads";

const buffer = Buffer.allocUnsafe(4 * 1024 * 1024);

export interface CopyTask {
  from: string;
  to: string;
  sizeBytes: number;
  progress: MessagePort;
}

export type CopyOutcome = { sha256: string } | { changed: number } | { failed: string; code: string | undefined; path: string };

export default function copyFile(task: CopyTask): CopyOutcome {
  let input: number | undefined;
  let output: number | undefined;
  let path = task.from;
  try {
    input = openSync(task.from, constants.O_RDONLY | constants.O_NOFOLLOW);
    path = task.to;
    output = openSync(task.to, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o644);
    const hash = createHash("sha256");
    let total = 0;
    for (;;) {
      path = task.from;
      const read = readSync(input, buffer, 0, buffer.length, null);
      if (read === 0) break;
      total += read;
      if (total > task.sizeBytes) return { changed: total };
      const chunk = buffer.subarray(0, read);
      hash.update(chunk);
      path = task.to;
      for (let offset = 0; offset < read; ) offset += writeSync(output, chunk, offset, read - offset);
      task.progress.postMessage(read);
    }
    if (total !== task.sizeBytes) return { changed: total };
    fsyncSync(output);
    return { sha256: hash.digest("hex") };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return { failed: code ?? (err as Error).message, code, path };
  } finally {
    if (input !== undefined) closeSync(input);
    if (output !== undefined) closeSync(output);
    task.progress.close();
  }
}
