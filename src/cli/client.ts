// What the client commands share: the connection to a running server
// (--address, MODELCACHE_ADDRESS), promise-shaped calls, and the exit codes
// scripts branch on.
import { readFileSync } from "node:fs";
import { type ChannelCredentials, type Interceptor, InterceptingCall, Metadata, type ServiceError, connectivityState, credentials, status } from "@grpc/grpc-js";
import { hostOf, isLoopback } from "../server/transport-security.js";
import { type Wording, inFlagWords } from "./flag-words.js";
import { ModelCacheServiceClient, type ModelCacheServiceService } from "../../generated/modelcache/v1/model_cache.js";

export const EXIT = { ok: 0, failure: 1, usage: 2, notFound: 3, unhealthy: 4, missing: 5, resourceExhausted: 6, interrupted: 130 } as const;

export interface Connection {
  address: string;
  /** sent as `authorization: Bearer <token>` on every call */
  token?: string;
  /** TLS: true for the system's CAs, or PEM files */
  tls?: boolean | { ca?: string; cert?: string; key?: string };
}

export function connect(connection: Connection): ModelCacheServiceClient {
  const interceptors = connection.token ? [bearer(connection.token)] : [];
  if (connection.token && !connection.tls && !isLoopback(hostOf(connection.address))) {
    process.stderr.write(`warning: sending the token to ${connection.address} without TLS; it can be read on the way (use --tls or --tls-ca)\n`);
  }
  return new ModelCacheServiceClient(connection.address, channelCredentials(connection.tls), { interceptors });
}

function channelCredentials(tls: Connection["tls"]): ChannelCredentials {
  if (!tls) return credentials.createInsecure();
  if (tls === true) return credentials.createSsl();
  const read = (file: string | undefined) => (file ? readFileSync(file) : null);
  return credentials.createSsl(read(tls.ca), read(tls.key), read(tls.cert));
}

/** Adds the bearer token to every call's metadata (over TLS or not: a loopback server may run without it). */
function bearer(token: string): Interceptor {
  return (options, next) =>
    new InterceptingCall(next(options), {
      start(metadata, listener, start) {
        metadata.set("authorization", `Bearer ${token}`);
        start(metadata, listener);
      },
    });
}

type Methods = typeof ModelCacheServiceService;
export type UnaryName = { [K in keyof Methods]: Methods[K]["responseStream"] extends false ? K : never }[keyof Methods];
export type RequestOf<K extends UnaryName> = Parameters<Methods[K]["requestSerialize"]>[0];
type ResponseOf<K extends UnaryName> = ReturnType<Methods[K]["responseDeserialize"]>;

/** Calls a unary method of the generated client by name and resolves with its response. */
export function call<K extends UnaryName>(client: ModelCacheServiceClient, method: K, request: RequestOf<K>, metadata = new Metadata()): Promise<ResponseOf<K>> {
  const fn = client[method] as unknown as (req: RequestOf<K>, md: Metadata, cb: (err: ServiceError | null, res: ResponseOf<K>) => void) => unknown;
  return new Promise((resolve, reject) => fn.call(client, request, metadata, (err, res) => (err ? reject(err) : resolve(res))));
}

/** A call that failed before it reached a server: the channel never connected. */
const NOT_CONNECTED = /^(No connection established|Name resolution failed|Failed to connect|Connection dropped)|^no gRPC server answered/;

/** Why the connection failed, read from the channel's last error, as a hint that fits it. */
function connectionHint(details: string, address: string, tls: boolean): string {
  const running = `is a server running at ${address}? start one with 'modelcache serve', or set --address / MODELCACHE_ADDRESS`;
  if (/wrong version number|WRONG_VERSION_NUMBER|packet length too long|http request/i.test(details)) {
    return `the server at ${address} does not speak TLS: leave out --tls and --tls-ca (and the client certificate flags)`;
  }
  if (/certificate|self[- ]signed|unable to verify|CERT_|altnames/i.test(details)) {
    return `the server's certificate is not trusted for ${address}: pass the CA that signed it with --tls-ca FILE (--tls trusts only the system's CAs)`;
  }
  if (/ECONNREFUSED|Name resolution failed|ENOTFOUND|EHOSTUNREACH|ENETUNREACH|EAI_AGAIN/.test(details)) return running;
  if (!tls) {
    // a TLS server drops a plaintext client's HTTP/2 preface without a word: that is the likely cause
    return `${address} accepted the connection but did not answer over plaintext gRPC: if the server uses TLS, connect with --tls-ca FILE (or --tls for a publicly trusted certificate); else ${running}`;
  }
  return running;
}

/** What to try next, by status code and cause; the server's message says what was wrong. */
function hintFor(code: status, details: string, address: string, tls: boolean): string {
  switch (code) {
    case status.UNAVAILABLE:
      if (NOT_CONNECTED.test(details)) return connectionHint(details, address, tls);
      return "the server is up, but it or something it depends on (the hub) is not ready: the message says what; try again later, or pull from a local directory with --fixture-dir";
    case status.NOT_FOUND:
      if (/the hub has no/.test(details)) return "'modelcache models get NAME' shows the model's source and revision; 'modelcache models update' changes them";
      return "'modelcache models list' shows the registered models";
    case status.UNAUTHENTICATED:
      return "pass a token with --token or MODELCACHE_TOKEN (an operator makes one with 'modelcache tokens new')";
    case status.PERMISSION_DENIED:
      return "this needs a token with more rights, or a path inside the server's --fixture-root";
    case status.INVALID_ARGUMENT:
      return "the message names the field to fix; '--help' on the command shows what each flag takes";
    case status.ALREADY_EXISTS:
      return "'modelcache models update' changes a registered model";
    case status.FAILED_PRECONDITION:
      return "the message says what must be true first; fix that and run the command again";
    case status.ABORTED:
      return "another operation on this model is under way; wait for it, or attach without --force";
    case status.RESOURCE_EXHAUSTED:
      if (/no space left on device|disk quota exceeded/i.test(details)) return "the server's disk is full: free space on it ('modelcache prune', 'modelcache models drop', or outside the cache), then try again; a hub download resumes where it stopped";
      if (/--min-free-bytes/.test(details)) return "the server keeps --min-free-bytes free on the cache's filesystem: free space there, or ask the operator to lower --min-free-bytes";
      return "a server limit was reached; narrow the model with --include/--exclude, or ask the operator to raise it";
    case status.DATA_LOSS:
      return "nothing was installed and the previous install is untouched; pull again, and if it repeats, the source is serving bad bytes";
    case status.CANCELLED:
      return "the call was cancelled; nothing was installed";
    case status.DEADLINE_EXCEEDED:
      return "the server took too long; try again";
    default:
      return "the server's log has the details of this call";
  }
}

/** Prints a failed call's message and a hint, no stack, and returns the exit code. */
export function reportError(err: unknown, connection: Connection, wording?: Wording): number {
  const service = err as Partial<ServiceError>;
  if (typeof service.code !== "number") {
    process.stderr.write(`error: ${(err as Error).message ?? String(err)}\n`);
    return EXIT.failure;
  }
  // grpc-js ends a connection failure with an empty "Resolution note: "
  const details = inFlagWords((service.details || status[service.code]).replace(/\.?\s*Resolution note:\s*$/, ""), wording);
  process.stderr.write(`error: ${details}\n`);
  process.stderr.write(`hint: ${hintFor(service.code, details, connection.address, Boolean(connection.tls))}\n`);
  switch (service.code) {
    case status.NOT_FOUND:
      return EXIT.notFound;
    case status.RESOURCE_EXHAUSTED:
      return EXIT.resourceExhausted;
    case status.CANCELLED:
      return EXIT.interrupted;
    default:
      return EXIT.failure;
  }
}

/**
 * Rejects when the channel is still connecting after `ms`: a call to an
 * address that swallows packets, or accepts the connection and never answers,
 * would otherwise wait forever (a refused connection fails the call at once).
 */
export function connectWithin(client: ModelCacheServiceClient, address: string, ms: number): { connected: Promise<never>; stop(): void } {
  let timer: NodeJS.Timeout | undefined;
  const connected = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const state = client.getChannel().getConnectivityState(false);
      if (state === connectivityState.CONNECTING || state === connectivityState.IDLE) {
        const details = `no gRPC server answered at ${address} within ${ms} ms (--connect-timeout)`;
        reject(Object.assign(new Error(details), { code: status.UNAVAILABLE, details }));
      }
    }, ms);
  });
  return { connected, stop: () => clearTimeout(timer) };
}
