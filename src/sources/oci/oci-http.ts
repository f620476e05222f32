// HTTP to an OCI distribution registry, with undici: the registry's auth
// challenge answered (Bearer: a token fetched from its realm, anonymously or
// with the credential alias's username and password; Basic: the alias),
// redirects followed by hand so that Authorization goes only to the
// registry's own origin (never to the blob host a blob redirects to),
// retries with backoff on connection errors and 5xx, and refusals turned
// into errors that name the alias, never its secret or a token.
import { setTimeout as sleep } from "node:timers/promises";
import { type Dispatcher, Agent } from "undici";
import { ModelCacheError, quote } from "../../errors.js";
import type { RangeReader } from "../hub/download-file.js";
import type { Readable } from "node:stream";
import { readWholeBody } from "../read-whole-body.js";
import { requestPromptly } from "../request-promptly.js";

export interface OciHttpOptions {
  baseUrl: string;
  repository: string;
  credential?: { alias: string; secret: string };
  dispatcher?: Dispatcher;
}

interface OciResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Dispatcher.ResponseData["body"];
}

const MAX_REDIRECTS = 5;
const ATTEMPTS = 5;
const MAX_DOCUMENT_BYTES = 4 * 1024 * 1024;

/** A manifest, an index or a token, read whole up to MAX_DOCUMENT_BYTES. */
function readDocument(body: Readable, what: string): Promise<Buffer> {
  return readWholeBody(body, MAX_DOCUMENT_BYTES, () => new ModelCacheError("failed_precondition", `${what} is larger than ${MAX_DOCUMENT_BYTES} bytes`));
}

const agent: Dispatcher = new Agent({ connections: 16, keepAliveTimeout: 10_000 });

export class OciHttp implements RangeReader {
  readonly origin: string;
  private authorization?: string;
  private readonly login?: { username: string; password: string };

  constructor(private readonly options: OciHttpOptions) {
    this.origin = new URL(options.baseUrl).origin;
    this.login = options.credential ? parseLogin(options.credential) : undefined;
  }

  url(path: string): string {
    return `${this.origin}/v2/${this.options.repository}/${path}`;
  }

  /** GET with retries until the response starts (2xx); the body is the caller's to read. */
  async get(url: string, what: string, signal: AbortSignal, range?: number, rangeEnd?: number, extra: Record<string, string> = {}, method = "GET"): Promise<OciResponse & { body: Readable & Dispatcher.ResponseData["body"] }> {
    const headers = { ...extra };
    if (rangeEnd !== undefined) headers.range = `bytes=${range ?? 0}-${rangeEnd - 1}`;
    else if (range !== undefined && range > 0) headers.range = `bytes=${range}-`;
    let challenged = false;
    for (let attempt = 1; ; attempt++) {
      try {
        const response = await this.follow(url, method, headers, signal);
        if (response.status < 300) return response;
        await response.body.dump().catch(() => undefined);
        if (response.status === 401 && !challenged) {
          // answered once: a second 401 means the credentials are not accepted
          challenged = true;
          await this.answerChallenge(response.headers["www-authenticate"], what, signal);
          attempt -= 1;
          continue;
        }
        if (response.status < 500 && response.status !== 429) throw this.refusal(response.status, what);
        if (attempt >= ATTEMPTS) throw new ModelCacheError("unavailable", `the registry ${this.origin} answered ${response.status} for ${what} ${attempt} times; try again later`);
      } catch (err) {
        if (signal.aborted) throw signal.reason;
        if (err instanceof ModelCacheError) throw err;
        // a registry that answers TLS with plain HTTP will not change its mind on a retry
        if (/ERR_SSL|EPROTO/.test(String((err as { code?: unknown }).code ?? ""))) {
          throw new ModelCacheError("unavailable", `the registry ${this.origin} does not speak TLS for ${what} (${(err as Error).message}): if it is reached over plain HTTP, name ${this.origin.slice("https://".length)} in --oci-plain-http`, { cause: err });
        }
        if (attempt >= ATTEMPTS) {
          throw new ModelCacheError("unavailable", `cannot reach the registry ${this.origin} for ${what}: ${(err as Error).message}${this.origin.startsWith("https:") ? " (a registry spoken to over plain HTTP must be named in --oci-plain-http)" : ""}`, { cause: err });
        }
      }
      await sleep(this.backoff(attempt), undefined, { signal });
    }
  }

  /** A manifest or index, its bytes and the registry's Docker-Content-Digest. */
  async manifest(reference: string, accept: string, signal: AbortSignal, method: "GET" | "HEAD" = "GET"): Promise<{ bytes: Buffer; mediaType: string; digest?: string }> {
    const what = `manifest ${quote(reference)} of ${quote(this.options.repository)}`;
    const response = await this.get(this.url(`manifests/${reference}`), what, signal, undefined, undefined, { accept }, method);
    const header = (name: string) => {
      const value = response.headers[name];
      return Array.isArray(value) ? value[0] : value;
    };
    const bytes = method === "HEAD" ? Buffer.alloc(0) : await readDocument(response.body, what);
    if (method === "HEAD") await response.body.dump().catch(() => undefined);
    return { bytes, mediaType: (header("content-type") ?? "").split(";")[0]!.trim(), digest: header("docker-content-digest") };
  }

  backoff(attempt: number): number {
    const ceiling = Math.min(10_000, 250 * 2 ** (attempt - 1));
    return ceiling / 2 + Math.random() * (ceiling / 2);
  }

  private async follow(url: string, method: string, extra: Record<string, string>, signal: AbortSignal): Promise<OciResponse> {
    let current = url;
    for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
      const target = new URL(current);
      const headers: Record<string, string> = { "user-agent": "modelcache", ...extra };
      // a blob may redirect to storage elsewhere: the registry's credentials stay with the registry
      if (this.authorization !== undefined && target.origin === this.origin) headers.authorization = this.authorization;
      const response = await requestPromptly(target, { method: method as "GET", headers, signal, dispatcher: this.options.dispatcher ?? agent });
      if (response.statusCode >= 300 && response.statusCode < 400 && response.headers.location) {
        await response.body.dump().catch(() => undefined);
        current = new URL(String(response.headers.location), target).href;
        continue;
      }
      return { status: response.statusCode, headers: response.headers, body: response.body };
    }
    throw new ModelCacheError("unavailable", `the registry ${this.origin} redirected more than ${MAX_REDIRECTS} times for ${url}`);
  }

  /** Sets the Authorization the registry's challenge asks for: a Bearer token from its realm, or Basic with the alias. */
  private async answerChallenge(header: string | string[] | undefined, what: string, signal: AbortSignal): Promise<void> {
    const challenge = Array.isArray(header) ? header[0] : header;
    const scheme = challenge?.split(" ")[0]?.toLowerCase();
    const basic = this.login ? `Basic ${Buffer.from(`${this.login.username}:${this.login.password}`).toString("base64")}` : undefined;
    if (scheme === "basic") {
      if (!basic) throw this.refusal(401, what);
      this.authorization = basic;
      return;
    }
    if (scheme !== "bearer") throw this.refusal(401, what);
    const params = Object.fromEntries([...challenge!.matchAll(/([A-Za-z]+)="([^"]*)"/g)].map((m) => [m[1]!.toLowerCase(), m[2]!]));
    if (!params.realm) throw new ModelCacheError("unavailable", `the registry ${this.origin} asked for a Bearer token for ${what} without naming a realm`);
    const realm = new URL(params.realm);
    if (params.service) realm.searchParams.set("service", params.service);
    realm.searchParams.set("scope", params.scope ?? `repository:${this.options.repository}:pull`);
    const headers: Record<string, string> = { "user-agent": "modelcache" };
    if (basic) headers.authorization = basic;
    const response = await requestPromptly(realm, { method: "GET", headers, signal, dispatcher: this.options.dispatcher ?? agent });
    if (response.statusCode !== 200) {
      await response.body.dump().catch(() => undefined);
      throw this.refusal(response.statusCode === 403 ? 403 : 401, what);
    }
    const body = JSON.parse((await readDocument(response.body, "the token")).toString("utf8")) as { token?: unknown; access_token?: unknown };
    const token = typeof body.token === "string" ? body.token : typeof body.access_token === "string" ? body.access_token : undefined;
    if (!token) throw new ModelCacheError("unavailable", `the token service of ${this.origin} answered without a token for ${what}`);
    this.authorization = `Bearer ${token}`;
  }

  private refusal(status: number, what: string): ModelCacheError {
    const alias = this.options.credential?.alias;
    const where = `the registry ${this.origin}`;
    if (status === 401) {
      return new ModelCacheError(
        "unauthenticated",
        alias
          ? `${where} did not accept the username and password of credential alias ${quote(alias)} for ${what} (401): store valid ones under that alias with PutSecret`
          : `${where} needs credentials for ${what} (401): store {"username": ..., "password": ...} with PutSecret and set credential_alias on the model`,
      );
    }
    if (status === 403) return new ModelCacheError("permission_denied", `${where} refused ${what} (403)${alias ? ` to credential alias ${quote(alias)}` : ""}`);
    if (status === 404) return new ModelCacheError("not_found", `${where} has no ${what} (404): check the model's source and revision`);
    return new ModelCacheError("failed_precondition", `${where} refused ${what} (${status})`);
  }
}

/** The alias's secret as a registry login: JSON {"username", "password"}. */
function parseLogin(credential: { alias: string; secret: string }): { username: string; password: string } {
  try {
    const value = JSON.parse(credential.secret) as { username?: unknown; password?: unknown };
    if (typeof value.username === "string" && typeof value.password === "string") return { username: value.username, password: value.password };
  } catch {
    // not JSON: refused below without repeating the secret
  }
  throw new ModelCacheError("failed_precondition", `the secret of credential alias ${quote(credential.alias)} is not a registry login: store {"username": "...", "password": "..."} under it with PutSecret`);
}

