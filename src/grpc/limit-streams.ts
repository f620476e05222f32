// At most `limit` calls open at once on one connection (--max-concurrent-streams).
// HTTP/2 tells clients the same limit (SETTINGS_MAX_CONCURRENT_STREAMS):
// standard clients, grpc-js included, queue the calls past it, and Node's
// HTTP/2 server refuses a stream past it (REFUSED_STREAM) from a client that
// ignores it. This guard is the last line should a stream ever get past the
// transport: the call is refused with RESOURCE_EXHAUSTED naming the flag. A
// call leaves the count when its status is sent, before its HTTP/2 stream
// closes, so a call the transport let through never meets the guard.
import { type ServerInterceptor, status } from "@grpc/grpc-js";
import { interceptCall } from "./intercept-call.js";

export function limitStreams(limit: number): ServerInterceptor {
  const open = new Map<string, number>();
  return (_method, call) => {
    const peer = call.getPeer();
    let counted = false;
    return interceptCall(call, {
      onMetadata(metadata) {
        const current = open.get(peer) ?? 0;
        if (current >= limit) {
          return {
            code: status.RESOURCE_EXHAUSTED,
            details: `this connection already has ${current} calls open, the most --max-concurrent-streams allows: wait for one to end, or open another connection`,
          };
        }
        open.set(peer, current + 1);
        counted = true;
        return metadata;
      },
      onEnd() {
        if (!counted) return;
        counted = false;
        const left = (open.get(peer) ?? 1) - 1;
        if (left > 0) open.set(peer, left);
        else open.delete(peer);
      },
    });
  };
}
