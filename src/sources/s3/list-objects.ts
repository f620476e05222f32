// The objects under an S3 prefix as source files: every ListObjectsV2 page,
// keys checked like a hub's paths (no '..', absolute paths or control
// characters: the whole listing is refused before anything is fetched),
// directory markers and dot-files left out, include/exclude applied. The
// listing's digest (keys, sizes, ETags, after filters) is the pull's
// resolved commit: one listing tells whether anything changed.
import { createHash } from "node:crypto";
import { MANIFEST_FILE, checkArtifactPath } from "../../cache/layout.js";
import { ModelCacheError, quote } from "../../errors.js";
import type { SourceFile } from "../artifact-source.js";
import { filterFiles } from "../file-filters.js";
import type { S3Location } from "./s3-location.js";
import type { S3Store } from "./s3-store.js";

export interface S3File extends SourceFile {
  key: string;
  etag: string;
}

/** Objects a listing may hold before it is refused, whatever the per-pull limits. */
const MAX_LISTED_OBJECTS = 1_000_000;

export async function listObjects(
  store: S3Store,
  location: S3Location,
  filters: { include: string[]; exclude: string[] },
  signal: AbortSignal,
): Promise<{ files: S3File[]; digest: string }> {
  const where = `s3://${location.bucket}/${location.prefix}`;
  const listed: S3File[] = [];
  let token: string | undefined;
  let objects = 0;
  do {
    const page = await store.list(location.prefix, token, signal);
    for (const object of page.Contents ?? []) {
      if (++objects > MAX_LISTED_OBJECTS) {
        throw new ModelCacheError("resource_exhausted", `${quote(where)} holds more than ${MAX_LISTED_OBJECTS} objects; no model is that large`);
      }
      const key = object.Key;
      if (key === undefined || !key.startsWith(location.prefix)) continue;
      const path = key.slice(location.prefix.length);
      // a zero-byte "folder/" object is how consoles show an empty directory
      if (path === "" || path.endsWith("/")) continue;
      try {
        checkArtifactPath(path, `the listing of ${quote(where)}`);
      } catch (err) {
        throw new ModelCacheError("failed_precondition", (err as Error).message);
      }
      if (path.split("/").some((part) => part.startsWith(".")) || path === MANIFEST_FILE) continue;
      const size = object.Size;
      if (typeof size !== "number" || !Number.isSafeInteger(size) || size < 0) {
        throw new ModelCacheError("unavailable", `the object store lists no size for ${quote(key)}`);
      }
      listed.push({ path, key, sizeBytes: size, etag: object.ETag ?? "" });
    }
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token !== undefined);
  const files = filterFiles(listed, filters.include, filters.exclude);
  files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  if (files.length === 0) throw new ModelCacheError("failed_precondition", `${quote(where)} holds no artifact files${filters.include.length + filters.exclude.length > 0 ? " that pass the model's include/exclude" : ""}`);
  const hash = createHash("sha256");
  for (const file of files) hash.update(JSON.stringify([file.key, file.sizeBytes, file.etag])).update("\n");
  // 40 hex digits, as a hub commit sha: the same places hold it
  return { files, digest: hash.digest("hex").slice(0, 40) };
}
