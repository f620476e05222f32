// --peer-max-bytes-per-second: one token bucket shared by every answer the
// hub endpoint sends to a peer, so serving the fleet never starves this
// node's own consumers; and the count of what went out to peers.
import { Bandwidth } from "../sources/hub/bandwidth.js";
import type { PeerRecorder } from "./peer-recorder.js";

export class PeerUploads {
  /** bytes that waited for the cap before going out (all of them, when a cap is set) */
  pacedBytes = 0;
  /** bytes sent to peers */
  sentBytes = 0;
  private readonly bandwidth: Bandwidth | undefined;

  constructor(
    readonly bytesPerSecond: number | undefined,
    private readonly recorder: () => PeerRecorder | undefined,
  ) {
    this.bandwidth = bytesPerSecond === undefined ? undefined : new Bandwidth(bytesPerSecond);
  }

  /** Resolves once `bytes` more may go to a peer; rejects with the signal's reason when it aborts first. */
  async take(bytes: number, signal: AbortSignal): Promise<void> {
    if (!this.bandwidth) return;
    try {
      await this.bandwidth.take(bytes, signal);
    } catch (err) {
      // the wait ends with the request's own reason (the peer went away), not a bare AbortError the server would log as a failure
      if (signal.aborted) throw signal.reason;
      throw err;
    }
    this.pacedBytes += bytes;
  }

  sent(bytes: number): void {
    this.sentBytes += bytes;
    this.recorder()?.peerBytes("out", bytes);
  }
}
