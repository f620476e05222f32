// One bucket of an S3-compatible object store (AWS S3, MinIO, Ceph RGW, R2,
// GCS's S3 interface) through @aws-sdk/client-s3: every call retried with
// exponential backoff and jitter on network errors, 5xx and SlowDown, and the
// store's refusals turned into errors that name what requests were signed
// with (the credential alias, never its secret; where the default chain
// found credentials; or none) and say what to do. Object reads are offered
// as the ranged GETs the hub downloads use, so that S3 pulls resume and
// verify the same way.
import type { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, S3Client, type S3ClientConfig, type S3ServiceException } from "@aws-sdk/client-s3";
import { ModelCacheError, quote } from "../../errors.js";
import type { RangeReader } from "../hub/download-file.js";
import type { Dispatcher } from "undici";
import { DEFAULT_CHAIN, type S3Credentials, chainSource } from "./s3-credentials.js";
import { undiciRequestHandler } from "./undici-handler.js";

export interface S3StoreOptions {
  bucket: string;
  /** --s3-endpoint or AWS_ENDPOINT_URL: any S3-compatible store, addressed path-style */
  endpoint?: string;
  region: string;
  /** the alias's; none: the AWS default chain's, else unsigned requests (see `open`) */
  credentials?: S3Credentials;
  /** named in errors about access */
  alias?: string;
  /** how requests leave the machine (proxies); without it, the SDK's own HTTP handler */
  dispatcher?: Dispatcher;
  attempts?: number;
  backoffMs?: number;
}

function clientFor(options: S3StoreOptions, signing: Partial<S3ClientConfig>): S3Client {
  return new S3Client({
    region: options.region,
    ...(options.endpoint !== undefined ? { endpoint: options.endpoint, forcePathStyle: true } : {}),
    ...signing,
    // retries are ours (below), with the same backoff as the hub's
    maxAttempts: 1,
    ...(options.dispatcher ? { requestHandler: undiciRequestHandler(options.dispatcher) } : {}),
    // the bytes are verified here as they arrive, against the checksum HeadObject announced
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
  });
}

export class S3Store implements RangeReader {
  readonly client: S3Client;
  /** the ETag each key had when listed: a read of a changed object fails instead of mixing versions */
  readonly etags = new Map<string, string>();
  private readonly attempts: number;
  private readonly backoffMs: number;

  /**
   * A store signing with the alias's credentials; without an alias, with
   * what the AWS default credential chain finds (refreshed by the SDK as
   * they expire); when the chain finds nothing, unsigned, for a public bucket.
   */
  static async open(options: S3StoreOptions): Promise<S3Store> {
    if (options.credentials) return new S3Store(options, clientFor(options, { credentials: options.credentials }), `the credentials of credential alias ${quote(options.alias ?? "")}`);
    const chained = clientFor(options, {});
    try {
      const found = await chained.config.credentials();
      return new S3Store(options, chained, `the credentials from ${chainSource(found)}, found by the AWS default credential chain as the model has no credential_alias`);
    } catch (err) {
      chained.destroy();
      // the chain's own words for "nothing configured"; anything else is configuration that does not work
      if ((err as Error).name !== "CredentialsProviderError" || !/from any providers/.test((err as Error).message)) {
        throw new ModelCacheError("unauthenticated", `${DEFAULT_CHAIN} failed to load credentials (${(err as Error).message}): fix that configuration, or store S3 credentials with PutSecret and set credential_alias`, { cause: err });
      }
      // nothing configured anywhere: a public bucket needs no signature
      const unsigned = { credentials: async () => ({ accessKeyId: "", secretAccessKey: "" }), signer: { sign: async (request: unknown) => request } };
      return new S3Store(options, clientFor(options, unsigned as Partial<S3ClientConfig>), `unsigned requests (the model has no credential_alias and ${DEFAULT_CHAIN} found no credentials)`);
    }
  }

  private constructor(
    private readonly options: S3StoreOptions,
    client: S3Client,
    /** how requests were signed, for messages about access */
    private readonly signedWith: string,
  ) {
    this.attempts = options.attempts ?? 5;
    this.backoffMs = options.backoffMs ?? 250;
    this.client = client;
  }

  get bucket(): string {
    return this.options.bucket;
  }

  /** One ListObjectsV2 page. */
  list(prefix: string, continuationToken: string | undefined, signal: AbortSignal) {
    return this.call(`the listing of ${this.where(prefix)}`, signal, () =>
      this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, ContinuationToken: continuationToken }), { abortSignal: signal }),
    );
  }

  /**
   * The object's metadata, with its checksums when the store keeps them: of
   * the listed version only (If-Match, and its ETag checked), so that a
   * checksum never names content the listing did not.
   */
  async head(key: string, signal: AbortSignal) {
    const what = `object ${this.where(key)}`;
    const listed = this.etags.get(key);
    const head = await this.call(what, signal, () =>
      this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key, ChecksumMode: "ENABLED", IfMatch: listed }), { abortSignal: signal }),
    );
    if (listed !== undefined && head.ETag !== undefined && head.ETag !== listed) throw this.refusal(412, "PreconditionFailed", what);
    return head;
  }

  /** RangeReader: `url` is the object's key. */
  async get(key: string, what: string, signal: AbortSignal, range?: number, rangeEnd?: number) {
    const header = rangeEnd !== undefined ? `bytes=${range ?? 0}-${rangeEnd - 1}` : range !== undefined && range > 0 ? `bytes=${range}-` : undefined;
    const response = await this.call(what, signal, () =>
      this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key, Range: header, IfMatch: this.etags.get(key) }), { abortSignal: signal }),
    );
    const listed = this.etags.get(key);
    if (listed !== undefined && response.ETag !== undefined && response.ETag !== listed) {
      // a store that ignores If-Match still names the version it sent
      (response.Body as Readable | undefined)?.destroy();
      throw this.refusal(412, "PreconditionFailed", what);
    }
    return {
      status: response.$metadata.httpStatusCode ?? 200,
      headers: { "content-range": response.ContentRange } as Record<string, string | undefined>,
      body: response.Body as Readable,
    };
  }

  /** The wait before retry `attempt + 1`: exponential, with full jitter in its upper half. */
  backoff(attempt: number): number {
    const ceiling = Math.min(10_000, this.backoffMs * 2 ** (attempt - 1));
    return ceiling / 2 + Math.random() * (ceiling / 2);
  }

  private where(key: string): string {
    return quote(`s3://${this.bucket}/${key}`);
  }

  private async call<T>(what: string, signal: AbortSignal, send: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await send();
      } catch (err) {
        if (signal.aborted) throw signal.reason;
        const status = (err as S3ServiceException).$metadata?.httpStatusCode;
        const code = (err as Error).name;
        const transient = status === undefined || status >= 500 || status === 429 || code === "SlowDown" || code === "RequestTimeout";
        if (!transient) throw this.refusal(status, code, what);
        if (attempt >= this.attempts) {
          const reason = status === undefined ? (err as Error).message : `${status} ${code}`;
          throw new ModelCacheError("unavailable", `the object store${this.endpointNote()} failed ${attempt} times for ${what} (${reason}); try again later`, { cause: err });
        }
      }
      await sleep(this.backoff(attempt), undefined, { signal });
    }
  }

  private endpointNote(): string {
    return this.options.endpoint !== undefined ? ` at ${new URL(this.options.endpoint).origin}` : "";
  }

  /** The store's refusal as an error naming how requests were signed (the alias, never its secret) and the fix. */
  private refusal(status: number, code: string, what: string): ModelCacheError {
    const alias = this.options.alias;
    const fix = alias
      ? "store valid ones under that alias with PutSecret"
      : "store S3 credentials with PutSecret and set credential_alias on the model or the pull, or give the server credentials through the AWS default chain";
    if (status === 401 || ["InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "TokenRefreshRequired"].includes(code)) {
      return new ModelCacheError("unauthenticated", `the object store did not accept ${this.signedWith} for ${what} (${code}): ${fix}`);
    }
    if (status === 403) {
      const grant = this.signedWith.startsWith("the credentials") ? "grant them s3:ListBucket and s3:GetObject, or " : "the bucket is not public: ";
      return new ModelCacheError("permission_denied", `the object store refused ${what} to ${this.signedWith} (${code}): ${grant}${fix}`);
    }
    if (status === 404) return new ModelCacheError("not_found", `the object store has no ${what} (${code}): check the model's source and --s3-endpoint`);
    if (status === 412) {
      return new ModelCacheError("aborted", `${what} changed in the object store while it was being pulled: pull again to fetch the new version`);
    }
    return new ModelCacheError("failed_precondition", `the object store refused ${what} (${status} ${code})`);
  }
}
