// Fetches one file whose sha256 is known from the peers that hold it, before
// its source is asked: up to 3 peers in rendezvous order, each asked with a
// HEAD of at most 200 ms, the first that holds it downloaded with the same
// machinery as any source (ranges, resume of a dropped connection, every
// byte hashed and checked against the digest). Any peer error (other bytes,
// no progress for 5 s, unreachable, a refusal) is logged and counted, the
// peer is not asked again in this pull, and the next peer is tried (a peer
// that lost the content between its HEAD and the GET is simply passed by);
// undefined when none had it, so the caller goes to the source. A forced
// pull's comparison with a stored copy asks the peers the same way.
import { type FileHandle, rm } from "node:fs/promises";
import { ModelCacheError } from "../errors.js";
import type { RateCap } from "../sources/hub/bandwidth.js";
import type { Connections } from "../sources/hub/connections.js";
import type { DownloadOptions } from "../sources/hub/download-file.js";
import { downloadMatching } from "../sources/hub/download-matching.js";
import { type RangeChoice, downloadVerified } from "../sources/hub/download-verified.js";
import { PeerHttp, isContentGone, peerError, reasonOf } from "./peer-http.js";
import { PEERS_PER_FILE, type Peers } from "./peers.js";
import { rendezvousOrder } from "./rendezvous-order.js";
import { StallWatch } from "./stall-watch.js";

/** What one pull learns of its peers: who failed it, and what they brought. */
export interface PeerPull {
  /** peers that failed this pull: never asked again in it */
  readonly excluded: Set<string>;
  /** verified bytes fetched from peers */
  bytes: number;
  /** connections a file in ranges may borrow, as a source's */
  readonly connections: Connections;
}

/** A file to bring from the peers that hold it. */
export interface PeerFileOptions {
  path: string;
  sizeBytes: number;
  sha256: string;
  bandwidth?: RateCap;
  parallelRangeMinBytes: number;
  /** false: downloads are written through the page cache only (see DownloadOptions) */
  directWrites?: boolean;
  signal: AbortSignal;
  /** a fresh count of bytes for each attempt (the caller tells the pull only what passes earlier attempts) */
  attempt(): (bytes: number) => void;
}

export interface PeerFetchOptions extends PeerFileOptions {
  /** where the download goes; removed again when no peer brings it */
  partialPath: string;
}

/** The verified file from a peer, or undefined when no peer brought it. */
export async function fetchFromPeers(peers: Peers, pull: PeerPull, options: PeerFetchOptions): Promise<{ path: string; sha256: string } | undefined> {
  const { partialPath } = options;
  return fromPeers(peers, pull, options, {
    // one peer's download from zero (no bytes of another peer are resumed: a mismatch is then this peer's alone)
    async transfer(request, choice) {
      await discard(partialPath);
      return { path: partialPath, sha256: await downloadVerified({ ...request, partialPath }, { ...choice, streamOnBytes: options.attempt() }) };
    },
    brought: () => true,
    failed: () => discard(partialPath),
  });
}

/**
 * For a forced pull: whether the first peer holding the file sends the bytes
 * of the stored copy open at `stored` (compared, nothing written: see
 * download-matching.ts); undefined when no peer holds it. False says nothing
 * of whose bytes are wrong: the caller fetches the file, verified. Bytes that
 * matched are not counted here: they count once the stored copy is found
 * intact and kept (countMatched).
 */
export async function matchFromPeers(peers: Peers, pull: PeerPull, options: PeerFileOptions, stored: FileHandle): Promise<boolean | undefined> {
  return fromPeers(peers, pull, options, {
    transfer: (request, choice) => downloadMatching(request, stored, choice),
    brought: () => false,
    failed: async () => undefined,
  });
}

/** Counts the bytes of a file a peer's bytes matched, once its stored copy is kept. */
export function countMatched(peers: Peers, pull: PeerPull, file: { path: string; sha256: string; sizeBytes: number }): void {
  pull.bytes += file.sizeBytes;
  peers.recorder?.peerBytes("in", file.sizeBytes);
  peers.logger.debug({ sha256: file.sha256, path: file.path, bytes: file.sizeBytes }, "compared with a peer's bytes");
}

interface PeerTransfer<T> {
  /** the transfer from one peer, through `request.http` */
  transfer(request: Omit<DownloadOptions, "partialPath">, choice: RangeChoice): Promise<T>;
  /** whether the result counts as bytes a peer brought */
  brought(result: T): boolean;
  /** clears what a failed transfer left */
  failed(): Promise<void>;
}

/**
 * Asks up to PEERS_PER_FILE peers in rendezvous order, each with a HEAD
 * within its budget; the first that holds the file is asked for it, under
 * the stall watch. A peer that fails is logged, counted and left out for the
 * rest of the pull, and the next one asked; undefined when none had it.
 */
async function fromPeers<T>(peers: Peers, pull: PeerPull, options: PeerFileOptions, how: PeerTransfer<T>): Promise<T | undefined> {
  const { list } = peers;
  if (!list) return undefined;
  const { sha256, signal } = options;
  const candidates = rendezvousOrder(sha256, (await list.current()).filter((peer) => !pull.excluded.has(peer)), PEERS_PER_FILE);
  for (const peer of candidates) {
    if (signal.aborted) throw signal.reason;
    // a peer that failed another file of this pull meanwhile is left out
    if (pull.excluded.has(peer)) continue;
    let watch: StallWatch | undefined;
    try {
      const answer = await new PeerHttp(peer, peers.token).head(sha256, options.sizeBytes, peers.headBudgetMs, signal, list.instanceId);
      if (answer === "self") {
        list.markSelf(peer);
        continue;
      }
      if (answer === "absent") continue;
      // the transfer's watch: every chunk received restarts it; it rests while the node's own cap holds the transfer back
      const stall = (watch = new StallWatch(peers.stallMs, () => peerError("timeout", `peer ${peer} sent nothing for ${peers.stallMs} ms`)));
      const http = new PeerHttp(peer, peers.token, () => stall.heard());
      const request = {
        http,
        url: http.blobUrl(sha256),
        origin: `peer ${http.peer}`,
        path: options.path,
        sizeBytes: options.sizeBytes,
        sha256,
        bandwidth: options.bandwidth && stall.resting(options.bandwidth),
        directWrites: options.directWrites,
        signal: AbortSignal.any([signal, stall.signal]),
        onBytes: options.attempt(),
      };
      const result = await pull.connections.whileHeld(() => how.transfer(request, { parallelRangeMinBytes: options.parallelRangeMinBytes, connections: pull.connections }));
      if (how.brought(result)) {
        pull.bytes += options.sizeBytes;
        peers.recorder?.peerBytes("in", options.sizeBytes);
        peers.logger.debug({ peer, sha256, path: options.path, bytes: options.sizeBytes }, "fetched from a peer");
      }
      return result;
    } catch (err) {
      await how.failed();
      if (signal.aborted) throw signal.reason;
      // a full disk or a failed sync is this node's trouble, not the peer's: the source would fail the same way
      if (err instanceof ModelCacheError && err.kind !== "data_loss" && err.kind !== "unavailable") throw err;
      if (isContentGone(err)) {
        // as if its HEAD had said so: the peer stays one to ask for the pull's other files
        peers.logger.debug({ peer, sha256, path: options.path }, "a peer no longer holds what its HEAD listed: the next peer or the source is asked");
        continue;
      }
      const reason = reasonOf(err);
      pull.excluded.add(peer);
      peers.recorder?.peerError(reason);
      peers.logger.warn({ peer, sha256, path: options.path, reason, error: (err as Error).message }, reason === "mismatch" ? "a peer sent other bytes than the digest: it is not asked again in this pull" : "a peer failed: the next peer or the source is asked");
    } finally {
      watch?.close();
    }
  }
  return undefined;
}

async function discard(partialPath: string): Promise<void> {
  await rm(partialPath, { force: true });
  await rm(`${partialPath}.segments.json`, { force: true });
}
