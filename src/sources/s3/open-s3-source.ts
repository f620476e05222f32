// A prefix of an S3-compatible bucket as an artifact source: the objects are
// listed (their digest is the resolved commit), each is asked for its
// full-object SHA-256 checksum, so that content the store already holds is
// linked rather than downloaded and a download that differs is DATA_LOSS,
// and each is fetched with the hub's resumable, verified downloads: large
// ones as parallel byte ranges. Partials are kept per listing digest, which
// covers every ETag, so a changed object is never resumed into. An object
// without a checksum is known by its version (key, ETag, size) once it has
// been downloaded, so content the store holds is linked the next time.
import { createHash } from "node:crypto";
import { setMaxListeners } from "node:events";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import type { FetchingSource, RemoteSourceOptions } from "../artifact-source.js";
import { Connections } from "../hub/connections.js";
import type { DownloadOptions } from "../hub/download-file.js";
import { fileTransfers } from "../hub/file-transfers.js";
import { type S3File, listObjects } from "./list-objects.js";
import { s3Credentials } from "./s3-credentials.js";
import { parseS3Location } from "./s3-location.js";
import { S3Store } from "./s3-store.js";

export interface S3Settings {
  /** --s3-endpoint or AWS_ENDPOINT_URL; unset for AWS itself */
  endpoint?: string;
  /** --s3-region, AWS_REGION, else us-east-1 */
  region: string;
}

export interface S3SourceOptions extends RemoteSourceOptions {
  source: string;
  include: string[];
  exclude: string[];
  credential?: { alias: string; secret: string };
  settings: S3Settings;
}

/** Connections a pull uses at once, as for a hub. */
const CONNECTIONS = 4;
/** HeadObject requests in flight while checksums are gathered. */
const HEADS_AT_ONCE = 8;

type ListingOptions = Pick<S3SourceOptions, "source" | "include" | "exclude" | "credential" | "settings" | "dispatcher" | "signal">;

/** The listing digest the source names now (what a pull would resolve): one listing, nothing fetched. */
export async function resolveS3Listing(options: ListingOptions): Promise<string> {
  return (await listSource(options)).digest;
}

async function listSource(options: ListingOptions) {
  const location = parseS3Location(options.source);
  const credentials = s3Credentials(options.credential);
  const store = await S3Store.open({ bucket: location.bucket, endpoint: options.settings.endpoint, region: options.settings.region, credentials, alias: options.credential?.alias, dispatcher: options.dispatcher });
  return { location, store, ...(await listObjects(store, location, options, options.signal)) };
}

export async function openS3Source(options: S3SourceOptions): Promise<FetchingSource> {
  const { location, store, files, digest } = await listSource(options);
  for (const file of files) store.etags.set(file.key, file.etag);
  await announceChecksums(store, files, options.signal);
  for (const file of files) {
    // the store learns the sha256 of this version of the object with its first download, and links it from then on
    if (file.sha256 === undefined && file.etag !== "") file.gitBlobId = objectVersionId(options.settings.endpoint, location.bucket, file);
  }
  const partialDir = options.layout.partialDir(options.name, digest);
  const transfers = fileTransfers(new Connections(CONNECTIONS, options.parallelRangeBelowBytesPerSecond), options.parallelRangeMinBytes);
  const origin = `the object store (s3://${location.bucket})`;

  return {
    description: `s3:${location.bucket}/${location.prefix.replace(/\/$/, "")}@${digest}`,
    resolvedCommit: digest,
    files,
    fetch: (file, signal, onBytes) => transfers.fetch(request(file as S3File, signal, onBytes)),
    match: (file, stored, signal, onBytes) => transfers.match(request(file as S3File, signal, onBytes), stored),
    async installed() {
      await rm(options.layout.partialDir(options.name), { recursive: true, force: true });
    },
  };

  function request(file: S3File, signal: AbortSignal, onBytes: (bytes: number) => void): DownloadOptions {
    return { http: store, url: file.key, origin, path: file.path, partialPath: join(partialDir, file.path), sizeBytes: file.sizeBytes, sha256: file.sha256, bandwidth: options.bandwidth, directWrites: options.directWrites, signal, onBytes };
  }
}

/**
 * The id under which the store maps a version of an object (endpoint,
 * bucket, key, ETag, size) to the sha256 of its content, as a hub file's git
 * blob id is mapped: the download that teaches it is pinned to that ETag
 * (If-Match, and the answer's ETag checked). The "s3:" prefix keeps it apart
 * from git blob ids in the same table.
 */
export function objectVersionId(endpoint: string | undefined, bucket: string, file: S3File): string {
  const version = JSON.stringify([endpoint ?? "aws", bucket, file.key, file.etag, file.sizeBytes]);
  return `s3:${createHash("sha256").update(version).digest("hex")}`;
}

/**
 * Sets each file's sha256 from the full-object SHA-256 checksum the store
 * keeps for it, if any (a multipart upload's composite checksum is not the
 * file's sha256, and is left out).
 */
async function announceChecksums(store: S3Store, files: S3File[], signal: AbortSignal): Promise<void> {
  // every HEAD in flight listens to it twice (undici's and requestPromptly's): a signal of their own allows
  // that many, where the caller's would warn of a "possible EventTarget memory leak" past ten
  const heads = AbortSignal.any([signal]);
  setMaxListeners(2 * HEADS_AT_ONCE, heads);
  let next = 0;
  const worker = async () => {
    while (next < files.length) {
      const file = files[next++]!;
      const head = await store.head(file.key, heads);
      const checksum = head.ChecksumSHA256;
      if (checksum === undefined || checksum.includes("-") || (head.ChecksumType !== undefined && head.ChecksumType !== "FULL_OBJECT")) continue;
      const hex = Buffer.from(checksum, "base64").toString("hex");
      if (/^[0-9a-f]{64}$/.test(hex)) file.sha256 = hex;
    }
  };
  await Promise.all(Array.from({ length: Math.min(HEADS_AT_ONCE, files.length) }, worker));
}
