// A model repository on a Hugging Face-compatible hub as an artifact source:
// the revision is resolved to a commit, the files of that commit are listed
// (following Link rel="next" pages) with their sizes and digests, and each
// file is downloaded from the pinned commit's resolve endpoint into a
// resumable partial file and verified; the content store then takes it.
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { MANIFEST_FILE, checkArtifactPath } from "../../cache/layout.js";
import { ModelCacheError, quote } from "../../errors.js";
import type { FetchingSource, RemoteSourceOptions, SourceFile } from "../artifact-source.js";
import { Connections } from "./connections.js";
import type { DownloadOptions } from "./download-file.js";
import { fileTransfers } from "./file-transfers.js";
import { HubHttp } from "./hub-http.js";

/** A listed file: LFS files carry the hub's sha256 of the content, the others their git blob id. */
export type HubFile = SourceFile;

export interface HubSourceOptions extends RemoteSourceOptions {
  hubUrl: string;
  repo: string;
  revision: string;
  token?: string;
  alias?: string;
}

/** The commit a revision names on the hub now: one request, nothing listed or downloaded. */
export function resolveHubRevision(options: Pick<HubSourceOptions, "hubUrl" | "repo" | "revision" | "token" | "alias" | "signal" | "dispatcher">): Promise<string> {
  return commitOf(new HubHttp({ baseUrl: options.hubUrl, token: options.token, alias: options.alias, dispatcher: options.dispatcher }), options);
}

async function commitOf(http: HubHttp, options: Pick<HubSourceOptions, "repo" | "revision" | "signal">): Promise<string> {
  const { body } = await http.json(
    http.url(`api/models/${repoUrlPath(options.repo)}/revision/${encodeURIComponent(options.revision)}`),
    `revision ${quote(options.revision)} of ${quote(options.repo)}`,
    options.signal,
  );
  const commit = (body as { sha?: unknown }).sha;
  if (typeof commit !== "string" || !COMMIT.test(commit)) {
    throw new ModelCacheError("unavailable", `the hub did not resolve revision ${quote(options.revision)} of ${quote(options.repo)} to a commit sha`);
  }
  return commit;
}

/** Hub connections a pull uses at once: each file in flight holds one, a file in ranges borrows idle ones. */
const CONNECTIONS = 4;

const COMMIT = /^[0-9a-f]{40}$/;

export async function openHubSource(options: HubSourceOptions): Promise<FetchingSource> {
  const repoPath = repoUrlPath(options.repo);
  const http = new HubHttp({ baseUrl: options.hubUrl, token: options.token, alias: options.alias, dispatcher: options.dispatcher });
  const commit = await commitOf(http, options);
  const files = await listFiles(http, repoPath, options.repo, commit, options.signal);
  files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const partialDir = options.layout.partialDir(options.name, commit);
  const transfers = fileTransfers(new Connections(CONNECTIONS, options.parallelRangeBelowBytesPerSecond), options.parallelRangeMinBytes);
  const resolveUrl = (file: SourceFile) => http.url(`${repoPath}/resolve/${commit}/${file.path.split("/").map(encodeURIComponent).join("/")}`);

  return {
    description: `hub:${options.repo}@${commit}`,
    resolvedCommit: commit,
    files,
    fetch: (file, signal, onBytes) => transfers.fetch(request(file, signal, onBytes)),
    match: (file, stored, signal, onBytes) => transfers.match(request(file, signal, onBytes), stored),
    async installed() {
      await rm(options.layout.partialDir(options.name), { recursive: true, force: true });
    },
  };

  /** How the hub is asked for one file (resumed into its partial, or compared). */
  function request(file: HubFile, signal: AbortSignal, onBytes: (bytes: number) => void): DownloadOptions {
    return {
      http,
      url: resolveUrl(file),
      path: file.path,
      partialPath: join(partialDir, file.path),
      sizeBytes: file.sizeBytes,
      sha256: file.sha256,
      gitBlobId: file.sha256 === undefined ? file.gitBlobId : undefined,
      bandwidth: options.bandwidth,
      directWrites: options.directWrites,
      signal,
      onBytes,
    };
  }
}

/** The repo id as a URL path: each '/'-separated part encoded, no empty, '.' or '..' part. */
function repoUrlPath(repo: string): string {
  const parts = repo.split("/");
  if (parts.length > 2 || parts.some((p) => p === "" || p === "." || p === "..")) {
    throw new ModelCacheError("invalid_argument", `model.source ${quote(repo)} is not a hub repo id such as 'sentence-transformers/all-MiniLM-L6-v2'`);
  }
  return parts.map(encodeURIComponent).join("/");
}

interface TreeEntry {
  type?: string;
  path?: string;
  size?: number;
  oid?: string;
  lfs?: { oid?: string; size?: number };
}

/** Entries (files and directories) a listing may hold before it is refused, whatever the per-pull limits. */
const MAX_LISTED_ENTRIES = 1_000_000;

async function listFiles(http: HubHttp, repoPath: string, repo: string, commit: string, signal: AbortSignal): Promise<HubFile[]> {
  const files: HubFile[] = [];
  let next: string | undefined = http.url(`api/models/${repoPath}/tree/${commit}?recursive=true&expand=false`);
  let entries = 0;
  for (let page = 0; next !== undefined; page++) {
    if (page > 10_000) throw new ModelCacheError("unavailable", `the hub's listing of ${quote(repo)} does not end`);
    const { body, headers } = await http.json(next, `the file list of ${quote(repo)}@${commit}`, signal);
    if (!Array.isArray(body)) throw new ModelCacheError("unavailable", `the hub's file list of ${quote(repo)} is not an array`);
    entries += body.length;
    if (entries > MAX_LISTED_ENTRIES) {
      throw new ModelCacheError("resource_exhausted", `the hub's listing of ${quote(repo)} holds more than ${MAX_LISTED_ENTRIES} entries; no model is that large`);
    }
    for (const entry of body as TreeEntry[]) {
      if (entry.type !== "file" || typeof entry.path !== "string") continue;
      const parts = entry.path.split("/");
      try {
        // before the dot-name skip below, so that `..` is refused, not quietly left out
        checkArtifactPath(entry.path, `the hub's listing of ${quote(repo)}`);
      } catch (err) {
        throw new ModelCacheError("failed_precondition", (err as Error).message);
      }
      if (parts.some((p) => p.startsWith(".")) || entry.path === MANIFEST_FILE) continue;
      const sha256 = entry.lfs?.oid;
      const size = entry.lfs?.size ?? entry.size;
      if (typeof size !== "number" || !Number.isSafeInteger(size) || size < 0) {
        throw new ModelCacheError("unavailable", `the hub lists no size for '${entry.path}'`);
      }
      files.push({
        path: entry.path,
        sizeBytes: size,
        sha256: typeof sha256 === "string" && /^[0-9a-f]{64}$/.test(sha256) ? sha256 : undefined,
        gitBlobId: typeof entry.oid === "string" && /^[0-9a-f]{40}$/.test(entry.oid) ? entry.oid : undefined,
      });
    }
    next = nextPage(headers.link, next, http.origin);
  }
  if (files.length === 0) throw new ModelCacheError("failed_precondition", `${quote(repo)}@${commit} on the hub has no artifact files`);
  return files;
}

/** The rel="next" target of a Link header, resolved against the page, only on the hub's own origin. */
function nextPage(link: string | string[] | undefined, current: string, origin: string): string | undefined {
  const text = Array.isArray(link) ? link.join(",") : link;
  const match = text ? /<([^>]+)>\s*;\s*rel="?next"?/.exec(text) : null;
  if (!match) return undefined;
  const url = new URL(match[1]!, current);
  return url.origin === origin ? url.href : undefined;
}
