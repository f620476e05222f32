// Where peer traffic and peer errors are counted (the server's metrics).
import type { PeerErrorReason } from "./peer-http.js";

/** Told of verified bytes received from peers, bytes sent to them, and each peer error. */
export interface PeerRecorder {
  peerBytes(direction: "in" | "out", bytes: number): void;
  peerError(reason: PeerErrorReason): void;
}
