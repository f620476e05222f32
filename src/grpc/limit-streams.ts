// At most `limit` calls open at once on one connection (--max-concurrent-streams):
// a call past it is refused with RESOURCE_EXHAUSTED naming the flag. HTTP/2 is
// told one more than the limit, so that the call past it reaches the server
// and is refused, rather than waiting unseen in the client's queue until its
// deadline; a client that wants to queue can retry on RESOURCE_EXHAUSTED.
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
