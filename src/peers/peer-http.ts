// HTTP to one peer's hub endpoint (undici, never through --proxy: peers are
// neighbours): the blob route's HEAD within a budget, and ranged GETs for the
// download machinery, one attempt each (a failing peer is left for the next,
// not retried). Every request carries `X-Modelcache-Peer: 1` and the
// --peer-token-file token; each chunk received tells `progress` (the stall
// watch). Failures carry the reason the metrics count them under.
import { Transform, pipeline } from "node:stream";
import { Agent, type Dispatcher } from "undici";
import { ModelCacheError } from "../errors.js";
import type { RangeReader } from "../sources/hub/download-file.js";
import { requestPromptly } from "../sources/request-promptly.js";

export type PeerErrorReason = "mismatch" | "timeout" | "unreachable" | "status";

const reasons = new WeakMap<object, PeerErrorReason>();

/** A ModelCacheError (so the download machinery gives up at once) that says which peer error it is. */
export function peerError(reason: PeerErrorReason, message: string, cause?: unknown): ModelCacheError {
  const error = new ModelCacheError(reason === "mismatch" ? "data_loss" : "unavailable", message, cause === undefined ? undefined : { cause });
  reasons.set(error, reason);
  return error;
}

const gone = new WeakSet<object>();

/** Whether `err` is a peer's 404 to a GET after its HEAD listed the content: it lost the content since (evicted, collected), which is no fault of the peer. */
export function isContentGone(err: unknown): boolean {
  return typeof err === "object" && err !== null && gone.has(err);
}

/** The peer error `err` is: its own reason, a verification failure (mismatch), else the peer is unreachable. */
export function reasonOf(err: unknown): PeerErrorReason {
  const known = typeof err === "object" && err !== null ? reasons.get(err) : undefined;
  if (known) return known;
  if (err instanceof ModelCacheError && err.kind === "data_loss") return "mismatch";
  return "unreachable";
}

export const PEER_HEADER = "X-Modelcache-Peer";
export const INSTANCE_HEADER = "X-Modelcache-Instance";

/**
 * No cap on connections per peer: the pulls bound what they fetch at once,
 * and a request queued behind a cap would wait for a connection past its
 * HEAD budget or stall watch, so a busy peer would be taken for a failed one.
 */
const agent: Dispatcher = new Agent({ keepAliveTimeout: 10_000 });

export type HeadAnswer = "present" | "absent" | "self";

export class PeerHttp implements RangeReader {
  constructor(
    readonly peer: string,
    private readonly token: string | undefined,
    /** told of every chunk received */
    private readonly progress: () => void = () => undefined,
  ) {}

  blobUrl(sha256: string): string {
    return `${this.peer}/v2/modelcache/blobs/sha256:${sha256}`;
  }

  /** Whether the peer holds the content (of `sizeBytes`), asked within `budgetMs`; a peer error otherwise. */
  async head(sha256: string, sizeBytes: number, budgetMs: number, signal: AbortSignal, instanceId: string): Promise<HeadAnswer> {
    let response: Dispatcher.ResponseData<unknown>;
    try {
      response = await requestPromptly(this.blobUrl(sha256), { method: "HEAD", headers: this.headers(), signal: AbortSignal.any([signal, AbortSignal.timeout(budgetMs)]), dispatcher: agent });
    } catch (err) {
      if (signal.aborted) throw signal.reason;
      const timedOut = (err as Error).name === "TimeoutError" || (err as { code?: string }).code === "UND_ERR_ABORTED";
      throw peerError(timedOut ? "timeout" : "unreachable", timedOut ? `peer ${this.peer} did not answer within ${budgetMs} ms` : `peer ${this.peer} is unreachable: ${(err as Error).message}`, err);
    }
    await response.body.dump().catch(() => undefined);
    if (response.headers[INSTANCE_HEADER.toLowerCase()] === instanceId) return "self";
    if (response.statusCode === 404) return "absent";
    if (response.statusCode !== 200) throw peerError("status", `peer ${this.peer} answered ${response.statusCode} to HEAD of sha256:${sha256}`);
    const length = Number(response.headers["content-length"]);
    if (length !== sizeBytes) throw peerError("mismatch", `peer ${this.peer} lists ${length} bytes for sha256:${sha256}, the source ${sizeBytes}`);
    return "present";
  }

  async get(url: string, what: string, signal: AbortSignal, range?: number, rangeEnd?: number): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Transform }> {
    const headers = this.headers();
    if (rangeEnd !== undefined) headers.range = `bytes=${range ?? 0}-${rangeEnd - 1}`;
    else if (range !== undefined && range > 0) headers.range = `bytes=${range}-`;
    let response: Dispatcher.ResponseData<unknown>;
    try {
      response = await requestPromptly(url, { method: "GET", headers, signal, dispatcher: agent });
    } catch (err) {
      if (signal.aborted) throw signal.reason;
      throw peerError("unreachable", `peer ${this.peer} is unreachable for ${what}: ${(err as Error).message}`, err);
    }
    if (response.statusCode !== 200 && response.statusCode !== 206) {
      await response.body.dump().catch(() => undefined);
      const error = peerError("status", `peer ${this.peer} answered ${response.statusCode} for ${what}`);
      if (response.statusCode === 404) gone.add(error);
      throw error;
    }
    const progress = this.progress;
    const watched = new Transform({
      transform(chunk: Buffer, _encoding, done) {
        progress();
        done(null, chunk);
      },
    });
    // either side failing or going away ends both
    pipeline(response.body, watched, () => undefined);
    return { status: response.statusCode, headers: response.headers, body: watched };
  }

  /** A connection dropped midway is resumed soon: the peer is a neighbour. */
  backoff(attempt: number): number {
    return 50 * attempt;
  }

  private headers(): Record<string, string> {
    return { "user-agent": "modelcache", [PEER_HEADER.toLowerCase()]: "1", ...(this.token !== undefined ? { authorization: `Bearer ${this.token}` } : {}) };
  }
}
