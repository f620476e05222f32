// HTTP to a Hugging Face-compatible hub, with undici: retries with
// exponential backoff and jitter on connection errors and 5xx, Retry-After
// on 429, redirects followed by hand so that the token goes only to the
// hub's own origin (never to the CDN an LFS file redirects to), and the
// hub's refusals turned into errors that say what to do.
import { setTimeout as sleep } from "node:timers/promises";
import { type Dispatcher, Agent } from "undici";
import { ModelCacheError, quote } from "../../errors.js";
import { readWholeBody } from "../read-whole-body.js";
import { requestPromptly } from "../request-promptly.js";

export interface HubHttpOptions {
  baseUrl: string;
  /** the secret of the credential alias, if any */
  token?: string;
  /** named in errors instead of the token */
  alias?: string;
  /** how requests leave the machine (proxies); without it, a direct connection */
  dispatcher?: Dispatcher;
  attempts?: number;
  backoffMs?: number;
}

export interface HubResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Dispatcher.ResponseData["body"];
  url: string;
}

const MAX_REDIRECTS = 5;
const MAX_RETRY_AFTER_MS = 60_000;
const agent: Dispatcher = new Agent({ connections: 16, keepAliveTimeout: 10_000 });

export class HubHttp {
  readonly origin: string;
  private readonly attempts: number;
  private readonly backoffMs: number;

  constructor(private readonly options: HubHttpOptions) {
    this.origin = new URL(options.baseUrl).origin;
    this.attempts = options.attempts ?? 5;
    this.backoffMs = options.backoffMs ?? 250;
  }

  url(path: string): string {
    return new URL(path, this.options.baseUrl.endsWith("/") ? this.options.baseUrl : `${this.options.baseUrl}/`).href;
  }

  /** GET a JSON document; `what` names it in errors. */
  async json(url: string, what: string, signal: AbortSignal): Promise<{ body: unknown; headers: HubResponse["headers"] }> {
    const response = await this.get(url, what, signal);
    try {
      return { body: JSON.parse((await readWholeBody(response.body, MAX_JSON_BYTES, () => new Error(`it is larger than ${MAX_JSON_BYTES} bytes`))).toString("utf8")), headers: response.headers };
    } catch (err) {
      if (signal.aborted) throw signal.reason;
      throw new ModelCacheError("unavailable", `the hub sent ${what} that is not valid JSON (${(err as Error).message})`);
    }
  }

  /**
   * GET with retries until the response starts (2xx); the body is the
   * caller's to read. `range` asks for the bytes from that offset on (up to
   * `rangeEnd`, exclusive, when given).
   */
  async get(url: string, what: string, signal: AbortSignal, range?: number, rangeEnd?: number): Promise<HubResponse> {
    for (let attempt = 1; ; attempt++) {
      let retryAfterMs: number | undefined;
      try {
        const response = await this.follow(url, signal, range, rangeEnd);
        if (response.status < 300) return response;
        await response.body.dump().catch(() => undefined);
        if (response.status === 429) retryAfterMs = parseRetryAfter(response.headers["retry-after"]);
        else if (response.status < 500) throw this.refusal(response.status, what);
        if (attempt >= this.attempts) {
          throw new ModelCacheError("unavailable", `the hub answered ${response.status} for ${what} ${attempt} times; try again later`);
        }
      } catch (err) {
        if (signal.aborted) throw signal.reason;
        if (err instanceof ModelCacheError) throw err;
        if (attempt >= this.attempts) {
          throw new ModelCacheError("unavailable", `cannot reach the hub at ${this.origin} for ${what}: ${(err as Error).message}`, { cause: err });
        }
      }
      await sleep(retryAfterMs ?? this.backoff(attempt), undefined, { signal });
    }
  }

  /** The wait before retry `attempt + 1`: exponential, with full jitter in its upper half. */
  backoff(attempt: number): number {
    const ceiling = Math.min(10_000, this.backoffMs * 2 ** (attempt - 1));
    return ceiling / 2 + Math.random() * (ceiling / 2);
  }

  private async follow(url: string, signal: AbortSignal, range: number | undefined, rangeEnd: number | undefined): Promise<HubResponse> {
    let current = url;
    for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
      const target = new URL(current);
      const headers: Record<string, string> = { "user-agent": "modelcache" };
      if (this.options.token !== undefined && target.origin === this.origin) headers.authorization = `Bearer ${this.options.token}`;
      if (rangeEnd !== undefined) headers.range = `bytes=${range ?? 0}-${rangeEnd - 1}`;
      else if (range !== undefined && range > 0) headers.range = `bytes=${range}-`;
      const response = await requestPromptly(target, { method: "GET", headers, signal, dispatcher: this.options.dispatcher ?? agent });
      if (response.statusCode >= 300 && response.statusCode < 400 && response.headers.location) {
        await response.body.dump().catch(() => undefined);
        current = new URL(String(response.headers.location), target).href;
        continue;
      }
      return { status: response.statusCode, headers: response.headers, body: response.body, url: current };
    }
    throw new ModelCacheError("unavailable", `the hub redirected more than ${MAX_REDIRECTS} times for ${url}`);
  }

  private refusal(status: number, what: string): ModelCacheError {
    const alias = this.options.alias;
    if (status === 401) {
      return new ModelCacheError(
        "unauthenticated",
        alias
          ? `the hub did not accept the secret of credential alias ${quote(alias)} for ${what} (401): store a valid token under that alias with PutSecret`
          : `the hub needs a token for ${what} (401): store one with PutSecret and set credential_alias on the model or the pull`,
      );
    }
    if (status === 403) {
      return new ModelCacheError(
        "permission_denied",
        alias
          ? `the hub refused ${what} to the token of credential alias ${quote(alias)} (403): grant it access, or store another under that alias with PutSecret`
          : `the hub refused ${what} (403): it may need a token with access; store one with PutSecret and set credential_alias`,
      );
    }
    if (status === 404) return new ModelCacheError("not_found", `the hub has no ${what} (404): check the model's source and revision`);
    return new ModelCacheError("failed_precondition", `the hub refused ${what} (${status})`);
  }
}

function parseRetryAfter(value: string | string[] | undefined): number | undefined {
  const text = Array.isArray(value) ? value[0] : value;
  if (!text) return undefined;
  const seconds = Number(text);
  const ms = Number.isFinite(seconds) ? seconds * 1000 : Date.parse(text) - Date.now();
  return Number.isFinite(ms) ? Math.min(MAX_RETRY_AFTER_MS, Math.max(0, ms)) : undefined;
}

/** The most a JSON answer of the hub may hold: a page of a listing is far smaller. */
const MAX_JSON_BYTES = 64 * 1024 * 1024;

