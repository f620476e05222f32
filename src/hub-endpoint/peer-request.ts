// Whether a request comes from a peer server's pull (X-Modelcache-Peer: 1):
// such a request is answered only from the store, and what it is sent counts
// against --peer-max-bytes-per-second.
import type { IncomingMessage } from "node:http";

export function isPeerRequest(req: IncomingMessage): boolean {
  return req.headers["x-modelcache-peer"] === "1";
}
