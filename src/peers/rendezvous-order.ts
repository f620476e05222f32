// The peers a piece of content is asked for, and in which order: rendezvous
// (highest random weight) hashing of the digest with each peer's address, so
// that every node asks the same peers for the same digest whatever the order
// of its list, different digests spread over different peers, and a peer
// joining or leaving moves only the digests it ranks first.
import { createHash } from "node:crypto";

/** At most `count` of `peers` (their addresses), highest weight for `sha256` first. */
export function rendezvousOrder(sha256: string, peers: readonly string[], count: number): string[] {
  const weighed = [...new Set(peers)].map((peer) => ({ peer, weight: createHash("sha256").update(`${sha256}\0${peer}`).digest().readBigUInt64BE(0) }));
  weighed.sort((a, b) => (a.weight === b.weight ? (a.peer < b.peer ? -1 : 1) : a.weight > b.weight ? -1 : 1));
  return weighed.slice(0, count).map((w) => w.peer);
}
