// A pull's source with peers asked first: every file whose sha256 the source
// lists before download is fetched from the peers that hold it when one
// does (fetch-from-peers.ts), else from the source; a forced pull compares
// its stored copies with a peer's bytes the same way. The pull's progress
// counts each byte once, however many attempts a file took, and the source
// tells the verified bytes peers brought (PullCompleted.peer_bytes).
import { rm } from "node:fs/promises";
import type { FetchingSource, SourceFile } from "../sources/artifact-source.js";
import { attemptProgress } from "../sources/attempt-progress.js";
import type { Bandwidth } from "../sources/hub/bandwidth.js";
import { Connections } from "../sources/hub/connections.js";
import type { ContentStore } from "../store/content-store.js";
import { type PeerFileOptions, type PeerPull, countMatched, fetchFromPeers, matchFromPeers } from "./fetch-from-peers.js";
import type { Peers } from "./peers.js";

/** Peer connections one pull uses at once, as for a source. */
const CONNECTIONS = 4;

export interface PeerSourceOptions {
  peers: Peers;
  /** peer downloads land in the store's ingest area, which the store owns and clears */
  store: ContentStore;
  bandwidth: Bandwidth | undefined;
  parallelRangeMinBytes: number;
  /** more connections join a lone large file only while one brings it slower than this (see Connections) */
  parallelRangeBelowBytesPerSecond: number;
  /** false: downloads are written through the page cache only (see DownloadOptions) */
  directWrites?: boolean;
}

export function withPeers(source: FetchingSource, options: PeerSourceOptions): FetchingSource {
  const pull: PeerPull = { excluded: new Set(), bytes: 0, connections: new Connections(CONNECTIONS, options.parallelRangeBelowBytesPerSecond) };
  const { store } = options;
  /** ingest files fetched from peers and handed to the pull: PruneCache leaves them until the pull is over */
  const handed = new Set<string>();
  /** files whose comparison a peer's bytes matched, not yet known kept */
  const matchedByPeer = new WeakSet<SourceFile>();
  const forgetHanded = async () => {
    for (const path of handed) {
      await rm(path, { force: true });
      store.ingesting.delete(path);
      handed.delete(path);
    }
  };
  /** What the peers are asked for a file. */
  const asked = (file: SourceFile & { sha256: string }, signal: AbortSignal, attempt: () => (bytes: number) => void): PeerFileOptions => ({
    path: file.path,
    sizeBytes: file.sizeBytes,
    sha256: file.sha256,
    bandwidth: options.bandwidth,
    parallelRangeMinBytes: options.parallelRangeMinBytes,
    directWrites: options.directWrites,
    signal,
    attempt,
  });
  return {
    ...source,
    async fetch(file, signal, onBytes) {
      const attempt = attemptProgress(onBytes);
      if (askPeers(file)) {
        const partialPath = store.ingestPath("peer-");
        store.ingesting.add(partialPath);
        const got = await fetchFromPeers(options.peers, pull, { ...asked(file, signal, attempt), partialPath }).catch((err: unknown) => {
          store.ingesting.delete(partialPath);
          throw err;
        });
        if (got) {
          handed.add(partialPath);
          return got;
        }
        store.ingesting.delete(partialPath);
      }
      return source.fetch(file, signal, attempt());
    },
    // a forced pull compares its stored copies with a peer's bytes first, as it would fetch them
    async match(file, stored, signal, onBytes) {
      const attempt = attemptProgress(onBytes);
      matchedByPeer.delete(file);
      if (askPeers(file)) {
        const matched = await matchFromPeers(options.peers, pull, asked(file, signal, attempt), stored);
        if (matched) matchedByPeer.add(file);
        if (matched !== undefined) return matched;
      }
      return source.match ? source.match(file, stored, signal, attempt()) : false;
    },
    kept(file) {
      // what a peer brought counts once the stored copy it matched is found intact and linked
      if (matchedByPeer.delete(file) && file.sha256 !== undefined) countMatched(options.peers, pull, { path: file.path, sha256: file.sha256, sizeBytes: file.sizeBytes });
      source.kept?.(file);
    },
    async installed() {
      // the store took every handed file by rename: their names are no longer in use
      await forgetHanded();
      await source.installed?.();
    },
    async abandoned() {
      // a handed file the install did not commit: a peer's download is never resumed, nobody else removes it before the next start
      await forgetHanded();
      await source.abandoned?.();
    },
    peerBytes: () => pull.bytes,
  };
}

/**
 * Whether peers are asked for the file: one whose sha256 the source lists,
 * with bytes, and not already on this machine (an OCI archive layer's entry,
 * unpacked: nothing to fetch).
 */
function askPeers(file: SourceFile): file is SourceFile & { sha256: string } {
  return file.sha256 !== undefined && file.sizeBytes > 0 && typeof (file as { localPath?: unknown }).localPath !== "string";
}
