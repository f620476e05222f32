// Fetches one file whose sha256 is known from the peers that hold it, before
// its source is asked: up to 3 peers in rendezvous order, each asked with a
// HEAD of at most 200 ms, the first that holds it downloaded with the same
// machinery as any source (ranges, resume of a dropped connection, every
// byte hashed and checked against the digest). Any peer error (other bytes,
// no progress for 5 s, unreachable, a refusal) is logged and counted, the
// peer is not asked again in this pull, and the next peer is tried (a peer
// that lost the content between its HEAD and the GET is simply passed by);
// undefined when none had it, so the caller goes to the source.
import { rm } from "node:fs/promises";
import { ModelCacheError } from "../errors.js";
import type { RateCap } from "../sources/hub/bandwidth.js";
import type { Connections } from "../sources/hub/connections.js";
import { downloadVerified } from "../sources/hub/download-verified.js";
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

export interface PeerFetchOptions {
  path: string;
  sizeBytes: number;
  sha256: string;
  /** where the download goes; removed again when no peer brings it */
  partialPath: string;
  bandwidth?: RateCap;
  parallelRangeMinBytes: number;
  signal: AbortSignal;
  /** a fresh count of bytes for each attempt (the caller tells the pull only what passes earlier attempts) */
  attempt(): (bytes: number) => void;
}

/** The verified file from a peer, or undefined when no peer brought it. */
export async function fetchFromPeers(peers: Peers, pull: PeerPull, options: PeerFetchOptions): Promise<{ path: string; sha256: string } | undefined> {
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
      const bandwidth = options.bandwidth && stall.resting(options.bandwidth);
      const got = await pull.connections.whileHeld(() => download(http, { ...options, bandwidth }, pull.connections, AbortSignal.any([signal, stall.signal])));
      pull.bytes += options.sizeBytes;
      peers.recorder?.peerBytes("in", options.sizeBytes);
      peers.logger.debug({ peer, sha256, path: options.path, bytes: options.sizeBytes }, "fetched from a peer");
      return got;
    } catch (err) {
      await discard(options.partialPath);
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

/** One peer's download from zero (no bytes of another peer are resumed: a mismatch is then this peer's alone). */
async function download(http: PeerHttp, options: PeerFetchOptions, connections: Connections, signal: AbortSignal): Promise<{ path: string; sha256: string }> {
  const { partialPath, sizeBytes, sha256 } = options;
  await discard(partialPath);
  const request = { http, url: http.blobUrl(sha256), origin: `peer ${http.peer}`, path: options.path, partialPath, sizeBytes, sha256, bandwidth: options.bandwidth, signal, onBytes: options.attempt() };
  const got = await downloadVerified(request, { parallelRangeMinBytes: options.parallelRangeMinBytes, connections, streamOnBytes: options.attempt() });
  return { path: partialPath, sha256: got };
}

async function discard(partialPath: string): Promise<void> {
  await rm(partialPath, { force: true });
  await rm(`${partialPath}.segments.json`, { force: true });
}
