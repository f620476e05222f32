// The one shape of server interceptor modelcache needs: look at a call's
// metadata before its handler does, and let it through (with metadata of
// one's choosing) or end it with a status; optionally hear when it ends.
import { wellFormed } from "../errors.js";
import { Metadata, ResponderBuilder, ServerInterceptingCall, type ServerInterceptingCallInterface, ServerListenerBuilder, type status } from "@grpc/grpc-js";

export interface CallHooks {
  /** Returns the metadata the handler sees, or a status that ends the call here. */
  onMetadata(metadata: Metadata): Metadata | { code: status; details: string };
  /** The call ended: its status was sent or the client cancelled it. */
  onEnd?(): void;
}

export function interceptCall(call: ServerInterceptingCallInterface, hooks: CallHooks): ServerInterceptingCall {
  return new ServerInterceptingCall(
    call,
    new ResponderBuilder()
      .withStart((next) => {
        next(
          new ServerListenerBuilder()
            .withOnReceiveMetadata((metadata, pass) => {
              const verdict = hooks.onMetadata(metadata);
              if (verdict instanceof Metadata) pass(verdict);
              else call.sendStatus({ code: verdict.code, details: wellFormed(verdict.details), metadata: new Metadata() });
            })
            .withOnCancel(() => hooks.onEnd?.())
            .build(),
        );
      })
      .withSendStatus((sent, next) => {
        hooks.onEnd?.();
        next(sent);
      })
      .build(),
  );
}
