// Downloads one file of a pinned commit into its resumable partial file:
// an interrupted transfer (dropped connection, cancelled pull, restarted
// server) goes on from the bytes already on disk with a Range request, and
// starts over only when the hub ignores Range. The bytes are hashed as they
// arrive (sha256, and the git blob sha1 for files not in LFS) and checked
// against the hub's listing; a mismatch removes the partial and fails.
import { createHash, type Hash } from "node:crypto";
import { mkdir, open, rm, stat, truncate } from "node:fs/promises";
import { dirname } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { readFileChunks } from "../../cache/read-file-chunks.js";
import { ModelCacheError, filesystemError } from "../../errors.js";
import type { Bandwidth } from "./bandwidth.js";
import type { HubHttp } from "./hub-http.js";

export interface DownloadOptions {
  http: HubHttp;
  url: string;
  /** the file's path in the repo, for messages */
  path: string;
  partialPath: string;
  sizeBytes: number;
  /** from the listing: sha256 for LFS files, git blob id for the others */
  sha256?: string;
  gitBlobId?: string;
  bandwidth?: Bandwidth;
  signal: AbortSignal;
  /** bytes newly accounted for; never more than sizeBytes in all */
  onBytes(bytes: number): void;
}

/** The verified file's sha256, once it is whole in `partialPath`. */
export async function downloadFile(options: DownloadOptions): Promise<string> {
  const { http, partialPath, sizeBytes, signal } = options;
  await mkdir(dirname(partialPath), { recursive: true });
  let reported = 0;
  const report = (done: number) => {
    if (done > reported) {
      options.onBytes(done - reported);
      reported = done;
    }
  };
  let have = (await stat(partialPath).catch(() => undefined))?.size ?? 0;
  if (have > sizeBytes) {
    await truncate(partialPath, 0);
    have = 0;
  }
  let hashes = newHashes(sizeBytes, options.gitBlobId !== undefined);
  if (have > 0) {
    let fed = 0;
    for await (const chunk of readFileChunks(partialPath, signal)) {
      const part = chunk.subarray(0, Math.min(chunk.length, have - fed));
      hashes.forEach((h) => h.update(part));
      fed += part.length;
      if (fed >= have) break;
    }
    report(have);
  }

  let failures = 0;
  while (have < sizeBytes) {
    const response = await http.get(options.url, `file '${options.path}'`, signal, have);
    if (have > 0 && !resumesAt(response, have)) {
      // the hub ignored the Range request: this file starts over
      have = 0;
      hashes = newHashes(sizeBytes, options.gitBlobId !== undefined);
    }
    const output = await open(partialPath, have > 0 ? "r+" : "w").catch((err: unknown) => {
      throw filesystemError("open the partial download", partialPath, err);
    });
    try {
      for await (const chunk of response.body as AsyncIterable<Buffer>) {
        if (have + chunk.length > sizeBytes) {
          await rm(partialPath, { force: true });
          throw new ModelCacheError("data_loss", `the hub sent more than the ${sizeBytes} bytes it lists for '${options.path}'; nothing was installed`);
        }
        await options.bandwidth?.take(chunk.length, signal);
        hashes.forEach((h) => h.update(chunk));
        for (let offset = 0; offset < chunk.length; ) {
          offset += (await output.write(chunk, offset, chunk.length - offset, have + offset)).bytesWritten;
        }
        have += chunk.length;
        report(have);
      }
      if (have < sizeBytes) throw new Error(`the transfer ended after ${have} of ${sizeBytes} bytes`);
      await output.sync();
    } catch (err) {
      if (signal.aborted) throw signal.reason;
      if (err instanceof ModelCacheError) throw err;
      failures += 1;
      if (failures >= 5) {
        throw new ModelCacheError("unavailable", `downloading '${options.path}' from the hub failed ${failures} times (${(err as Error).message}); pull again to resume`);
      }
      await sleep(http.backoff(failures), undefined, { signal });
    } finally {
      await output.close();
    }
  }

  const [sha256, blob] = hashes.map((h) => h.digest("hex"));
  const mismatch =
    options.sha256 !== undefined && sha256 !== options.sha256
      ? `sha256 ${sha256}, the hub lists ${options.sha256}`
      : options.gitBlobId !== undefined && blob !== options.gitBlobId
        ? `git blob id ${blob}, the hub lists ${options.gitBlobId}`
        : undefined;
  if (mismatch) {
    await rm(partialPath, { force: true });
    throw new ModelCacheError("data_loss", `file '${options.path}' from the hub does not match its listing: its bytes have ${mismatch}; nothing was installed`);
  }
  return sha256!;
}

/** sha256 always; the git blob sha1 ("blob <size>\0" + bytes) when asked. */
function newHashes(sizeBytes: number, gitBlob: boolean): Hash[] {
  const hashes = [createHash("sha256")];
  if (gitBlob) hashes.push(createHash("sha1").update(`blob ${sizeBytes}\0`));
  return hashes;
}

function resumesAt(response: { status: number; headers: Record<string, string | string[] | undefined> }, offset: number): boolean {
  if (response.status !== 206) return false;
  const range = /^bytes (\d+)-/.exec(String(response.headers["content-range"] ?? ""));
  return range !== null && Number(range[1]) === offset;
}
