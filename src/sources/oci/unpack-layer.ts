// Unpacks a verified .tar or .tar+gzip layer into a staging directory with
// tar-stream: regular files and directories only (pax and GNU long-name
// headers are read as metadata by the library), every entry's path checked
// as any artifact path, so nothing lands outside the staging directory.
import { createHash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir } from "node:fs/promises";
import { dirname, join } from "node:path";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGunzip } from "node:zlib";
import { extract } from "tar-stream";
import { checkArtifactPath } from "../../cache/layout.js";
import { ModelCacheError, filesystemError, isOutOfSpace, quote } from "../../errors.js";

export interface UnpackedFile {
  path: string;
  sizeBytes: number;
  sha256: string;
  localPath: string;
}

/**
 * The layer's regular files, written under `stagingDir` at their paths (put
 * under `prefix` when they do not already begin with it), with their sha256.
 * `entries.admit` sees each file's path and declared size before a byte of
 * it is written: it refuses (limits, room, duplicates) by throwing, and
 * returns false for a file left out (the model's filters), which is read
 * past and not written; `entries.written` hears of each file once it is.
 */
export async function unpackLayer(
  blobPath: string,
  gzip: boolean,
  prefix: string,
  stagingDir: string,
  what: string,
  entries: { admit(path: string, sizeBytes: number): Promise<boolean>; written(file: UnpackedFile): void },
  signal: AbortSignal,
): Promise<UnpackedFile[]> {
  const files: UnpackedFile[] = [];
  const reader = extract();
  const consume = (async () => {
    for await (const entry of reader) {
      const header = entry.header;
      const name = header.name.replace(/^\.\//, "").replace(/\/+$/, "");
      if (header.type === "directory") {
        entry.resume();
        continue;
      }
      if (header.type !== "file" && header.type !== "contiguous-file") {
        entry.resume();
        throw new ModelCacheError("failed_precondition", `${what} holds ${quote(header.name)}, a ${header.type} entry: only regular files and directories are installed`);
      }
      const path = prefix === "" || name === prefix || name.startsWith(`${prefix}/`) ? name : `${prefix}/${name}`;
      checkArtifactPath(path, `${what}, entry ${quote(header.name)}`);
      const declared = header.size ?? 0;
      if (!Number.isSafeInteger(declared) || declared < 0) throw new ModelCacheError("failed_precondition", `${what}, entry ${quote(header.name)}, declares a size of ${declared} bytes, which no file has`);
      if (!(await entries.admit(path, declared))) {
        entry.resume();
        continue;
      }
      const localPath = join(stagingDir, path);
      // admitting may have waited for room: nothing more is written once the pull is over
      signal.throwIfAborted();
      await mkdir(dirname(localPath), { recursive: true });
      const hash = createHash("sha256");
      let size = 0;
      const hashing = new Transform({
        transform(chunk: Buffer, _encoding, done) {
          hash.update(chunk);
          size += chunk.length;
          // what was admitted is the declared size: not a byte more is written
          if (size > declared) return done(new ModelCacheError("failed_precondition", `${what}, entry ${quote(header.name)}, holds more than the ${declared} bytes its header declares`));
          done(null, chunk);
        },
      });
      await pipeline(entry, hashing, createWriteStream(localPath, { flags: "wx" }), { signal });
      const file = { path, sizeBytes: size, sha256: hash.digest("hex"), localPath };
      files.push(file);
      entries.written(file);
    }
  })().catch((err: unknown) => {
    // a refused entry stops the reading too
    reader.destroy();
    throw err;
  });
  const read = pipeline([createReadStream(blobPath), ...(gzip ? [createGunzip()] : []), reader], { signal });
  // both settle before this returns: the caller may remove the staging dir, and no write may come after
  const [reading, consuming] = await Promise.allSettled([read, consume]);
  const failures = [consuming, reading].flatMap((r) => (r.status === "rejected" ? [r.reason as unknown] : []));
  if (failures.length > 0) {
    if (signal.aborted) throw signal.reason;
    // what was refused, else what broke the reading (a torn gzip stream), rather than the premature close it caused
    const err = failures.find((e) => e instanceof ModelCacheError) ?? (reading.status === "rejected" ? reading.reason : failures[0]);
    if (err instanceof ModelCacheError) throw err;
    if (isOutOfSpace(err)) throw filesystemError("unpack the layer", stagingDir, err);
    if ((err as { code?: string }).code === "EEXIST") throw new ModelCacheError("failed_precondition", `${what} holds the same file twice (${(err as Error).message})`);
    throw new ModelCacheError("failed_precondition", `${what} is not a readable tar archive (${(err as Error).message})`);
  }
  return files;
}
