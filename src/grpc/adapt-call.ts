// Turns plain async domain functions into grpc-js handlers: each call gets an
// AbortSignal (client cancellation, deadline, or server shutdown), errors are
// mapped once, streams respect write backpressure, and every call is logged
// with its method, model, status and duration.
import { once } from "node:events";
import { type ServerUnaryCall, type ServerWritableStream, type handleServerStreamingCall, type handleUnaryCall, type sendUnaryData, status } from "@grpc/grpc-js";
import type { Logger } from "pino";
import { ModelCacheError } from "../errors.js";
import { toServiceError } from "./errors.js";
import { callerOf } from "./guard-calls.js";
import { MUTATING_METHODS } from "../auth/method-roles.js";
import { type MethodDefinition, methodOf } from "./method-path.js";

/** Told about every call (the server's metrics), by the method's path. */
export interface RpcRecorder {
  started(path: string, type: "unary" | "server_stream"): void;
  handled(path: string, type: "unary" | "server_stream", code: string, seconds: number): void;
}

export interface CallContext {
  logger: Logger;
  /** where audit lines go (default: logger) */
  audit?: Logger;
  rpcs?: RpcRecorder;
  /** aborts every pull when the server shuts down; unary calls are let finish */
  shutdown: AbortSignal;
}

/** What a unary handler knows of its call besides the request. */
export interface UnaryCall {
  /** aborts when the client cancels or the deadline passes; made when first read (most calls never need one) */
  readonly signal: AbortSignal;
  /** the token's name, else the client's address, as audit lines name it */
  readonly caller: string;
  /** This call of a method that can change things changed nothing (a ResolveModel that neither pulled, leased nor asked its source): no audit line. */
  changedNothing(): void;
}

/**
 * A handler may answer at once (a value) or later (a promise). An answer
 * given at once is sent from the event loop's check phase (setImmediate),
 * once the requests read in this turn have all been taken in, not from
 * inside the read of its own request: under many concurrent calls that
 * costs a quarter less CPU a call than answering where the request was read
 * (and than grpc-js's own handlers, health, which do), the answers of a
 * turn being encoded and sent one after another (BENCHMARKS.md, "answers
 * sent after the turn's reads").
 */
export function unary<Req, Res>(context: CallContext, { path }: MethodDefinition, handle: (request: Req, call: UnaryCall) => Res | PromiseLike<Res>): handleUnaryCall<Req, Res> {
  const method = methodOf(path);
  return (call, callback) => {
    const state = new UnaryCallState(path, method, call);
    context.rpcs?.started(path, "unary");
    let result: Res | PromiseLike<Res>;
    try {
      result = handle(call.request, state);
    } catch (err) {
      failed(context, state, callback, err);
      return;
    }
    if (!isThenable(result)) {
      // the caller, when a line will name it, is named now: a client gone by the check phase is "unknown" to grpc-js
      if (namedInLines(context, state)) state.nameCaller();
      setImmediate(settleLater<Res, Res>, answered<Res>, context, state, callback, result);
      return;
    }
    // the call may be cancelled while it waits, and grpc-js then no longer knows the client's address
    state.nameCaller();
    result.then(
      (response) => settleLater(answered<Res>, context, state, callback, response),
      (err: unknown) => settleLater(failed<Res>, context, state, callback, err),
    );
  };
}

/** Whether the call's log or audit line (logCall), as things stand, will name its caller. */
function namedInLines(context: CallContext, state: UnaryCallState): boolean {
  return writesRpcLine(context) || writesAuditLine(state.path, state.audited);
}

/**
 * Ends a call after its handler returned, by `settle` (answered or failed):
 * an answer given at once, from the check phase, or what a promise settled
 * to. A throw in it (a log destination that throws) would end the process,
 * or go unhandled; inside grpc-js's call of the handler it ends the call
 * alone, as UNKNOWN: so it does here too.
 */
function settleLater<Res, T>(
  settle: (context: CallContext, state: UnaryCallState, callback: sendUnaryData<Res>, outcome: T) => void,
  context: CallContext,
  state: UnaryCallState,
  callback: sendUnaryData<Res>,
  outcome: T,
): void {
  try {
    settle(context, state, callback, outcome);
  } catch (err) {
    // grpc-js sends one status a call: when the answer went out before the throw, this one is dropped
    callback({ code: status.UNKNOWN, details: `the server failed while answering: ${err instanceof Error ? err.message : String(err)}` });
  }
}

/** A promise of any make (a response message has no `then`). */
function isThenable<T>(value: T | PromiseLike<T>): value is PromiseLike<T> {
  return typeof (value as { then?: unknown } | null)?.then === "function";
}

function answered<Res>(context: CallContext, state: UnaryCallState, callback: sendUnaryData<Res>, response: Res): void {
  state.ended();
  logCall(context, state, state.request, status.OK, undefined, state.audited);
  context.rpcs?.handled(state.path, "unary", "OK", (performance.now() - state.started) / 1000);
  callback(null, response);
}

function failed<Res>(context: CallContext, state: UnaryCallState, callback: sendUnaryData<Res>, err: unknown): void {
  state.ended();
  const error = toServiceError(err);
  logCall(context, state, state.request, error.code, error.details);
  context.rpcs?.handled(state.path, "unary", status[error.code], (performance.now() - state.started) / 1000);
  callback(error);
}

/**
 * Aborts when the client cancels the call or its deadline passes. grpc-js
 * also reports "cancelled" when the stream of a call that has ended closes:
 * after `ended` that is no news, and costs no error (with its stack) per call.
 * The AbortController, and the listener that fires it, are made when the
 * signal is first read (a few microseconds a call that a lookup answered in
 * less); grpc-js marks a call `cancelled` before it says so, so a signal
 * first read after the cancel is made aborted.
 */
class CallCancellation {
  #controller: AbortController | undefined;
  #ended = false;

  constructor(readonly call: ServerUnaryCall<unknown, unknown> | ServerWritableStream<unknown, unknown>) {}

  get signal(): AbortSignal {
    if (!this.#controller) {
      const controller = (this.#controller = new AbortController());
      if (this.call.cancelled && !this.#ended) controller.abort(cancelledByClient());
      else
        this.call.once("cancelled", () => {
          if (!this.#ended) controller.abort(cancelledByClient());
        });
    }
    return this.#controller.signal;
  }

  ended(): void {
    this.#ended = true;
  }
}

/**
 * A unary call as its handler and its log lines see it. The caller is named
 * when first asked (a call answered at once that is neither logged nor
 * audited never is), or before the handler first waits.
 */
class UnaryCallState extends CallCancellation implements UnaryCall, Begun {
  readonly started = performance.now();
  audited = true;
  #caller: string | undefined;

  constructor(
    readonly path: string,
    readonly method: string,
    call: ServerUnaryCall<unknown, unknown>,
  ) {
    super(call);
  }

  get request(): unknown {
    return this.call.request;
  }

  get caller(): string {
    return (this.#caller ??= callerName(this.call));
  }

  nameCaller(): void {
    void this.caller;
  }

  changedNothing(): void {
    this.audited = false;
  }
}

export function serverStream<Req, Res>(
  context: CallContext,
  { path }: MethodDefinition,
  handle: (request: Req, signal: AbortSignal) => AsyncIterable<Res>,
): handleServerStreamingCall<Req, Res> {
  const method = methodOf(path);
  return (call) => {
    const begun = begin(path, method, call);
    context.rpcs?.started(path, "server_stream");
    const cancelled = new CallCancellation(call);
    const signal = AbortSignal.any([cancelled.signal, context.shutdown]);
    void (async () => {
      try {
        for await (const message of handle(call.request, signal)) {
          if (!call.write(message)) await once(call, "drain", { signal });
        }
        cancelled.ended();
        logCall(context, begun, call.request, status.OK);
        context.rpcs?.handled(path, "server_stream", "OK", (performance.now() - begun.started) / 1000);
        call.end();
      } catch (err) {
        // once the call's signal has fired, its reason (client gone, or the
        // server shutting down) says better than the error it caused
        const error = toServiceError(signal.aborted ? signal.reason : err);
        logCall(context, begun, call.request, error.code, error.details);
        context.rpcs?.handled(path, "server_stream", status[error.code], (performance.now() - begun.started) / 1000);
        call.emit("error", error);
      }
    })();
  };
}

function cancelledByClient(): ModelCacheError {
  return new ModelCacheError("cancelled", "the client cancelled the call or its deadline passed");
}

/** What a call's log lines need from its start. */
interface Begun {
  path: string;
  method: string;
  started: number;
  caller: string;
}

/**
 * The caller is named when the call starts: once a client has cancelled,
 * grpc-js no longer knows its peer ("unknown").
 */
function begin(path: string, method: string, call: ServerWritableStream<unknown, unknown>): Begun {
  return { path, method, started: performance.now(), caller: callerName(call) };
}

/** The token's name, else the client's address, as audit lines name it. */
function callerName(call: ServerUnaryCall<unknown, unknown> | ServerWritableStream<unknown, unknown>): string {
  return callerOf(call.metadata) ?? `peer ${call.getPeer()}`;
}

/**
 * One line per call (method, model, code, duration); a call that changes
 * anything also gets an audit line naming its caller (token name, client
 * certificate subject, or the peer address when auth is off).
 */
function logCall(context: CallContext, begun: Begun, request: unknown, code: status, details?: string, audited = true): void {
  // the caller is read only for a line that is written (naming it may cost a lookup)
  const { path, method, started } = begun;
  const fields = request as { name?: unknown; alias?: unknown; model?: { name?: unknown }; models?: { name?: unknown }[]; dryRun?: unknown } | null;
  const name = fields?.name || fields?.model?.name;
  const model = typeof name === "string" && name !== "" ? name.slice(0, 128) : undefined;
  if (writesRpcLine(context)) {
    context.logger.info({ method, model, caller: begun.caller, code: status[code], duration_ms: Math.round(performance.now() - started), error: details }, "rpc");
  }
  if (writesAuditLine(path, audited)) {
    const alias = typeof fields?.alias === "string" && fields.alias !== "" ? fields.alias.slice(0, 128) : undefined;
    // ApplyModels names every model it was asked to bring in line, and whether it only planned
    const models = Array.isArray(fields?.models) ? fields.models.slice(0, 100).map((m) => String(m?.name ?? "").slice(0, 128)) : undefined;
    const dryRun = fields?.dryRun === true ? true : undefined;
    (context.audit ?? context.logger).info({ audit: true, caller: begun.caller, method, model, models, dryRun, alias, result: status[code] }, "audit");
  }
}

/** Whether logCall writes a line for every call (the log at info or below). */
function writesRpcLine(context: CallContext): boolean {
  return context.logger.isLevelEnabled("info");
}

/** Whether logCall writes an audit line for a call of `path` (one that may change things and was not marked as changing nothing). */
function writesAuditLine(path: string, audited: boolean): boolean {
  return audited && MUTATING_METHODS.has(path);
}
