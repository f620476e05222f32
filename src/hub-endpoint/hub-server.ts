// The hub endpoint's HTTP/1.1 server (HTTPS with the server's TLS files) on
// --hub-listen: each request authorized, routed (parse-hub-path.ts),
// answered (answer-route.ts), logged and audited as gRPC calls are, and
// counted. Errors become the hub's JSON bodies, with X-Error-Code on 404s.
import { readFile, rm } from "node:fs/promises";
import { type IncomingMessage, type Server, type ServerResponse, createServer as createHttpServer } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import type { TLSSocket } from "node:tls";
import type { Logger } from "pino";
import type { AccessTokens } from "../auth/access-tokens.js";
import { type ErrorKind, ModelCacheError } from "../errors.js";
import type { Runtime } from "../runtime.js";
import type { TlsFiles } from "../server/transport-security.js";
import { authorizeRequest } from "./authorize-request.js";
import { answerRoute } from "./answer-route.js";
import { hubErrorCodeOf, hubNotFound } from "./hub-errors.js";
import { isPeerRequest } from "./peer-request.js";
import { parseHubPath } from "./parse-hub-path.js";

/** Told of every request and every byte of file content sent (the server's metrics). */
export interface HubRecorder {
  hubRequest(route: string, code: number): void;
  hubSent(bytes: number): void;
}

export interface HubServerOptions {
  runtime: Runtime;
  logger: Logger;
  audit: Logger;
  authTokens: AccessTokens | undefined;
  tls: TlsFiles | undefined;
  recorder: HubRecorder | undefined;
}

export interface HubServer {
  /** host:port, or unix:PATH */
  address: string;
  /** stops accepting; downloads under way get `graceMs` to end, then are cut */
  close(graceMs: number): Promise<void>;
}

const STATUS_OF: Partial<Record<ErrorKind, number>> = {
  invalid_argument: 400,
  unauthenticated: 401,
  permission_denied: 403,
  not_found: 404,
  failed_precondition: 412,
  resource_exhausted: 429,
  unavailable: 503,
  cancelled: 499,
};

/** Listens on `listen` (host:port or unix:PATH) and resolves once bound. */
export async function startHubServer(listen: string, options: HubServerOptions): Promise<HubServer> {
  // responses under way, so that once the server closes each one's connection is closed as it ends
  const answering = new Set<ServerResponse>();
  let closing = false;
  const handler = (req: IncomingMessage, res: ServerResponse) => {
    // a request that comes on a kept-alive connection while the server closes is the connection's last
    if (closing) res.shouldKeepAlive = false;
    answering.add(res);
    res.once("close", () => answering.delete(res));
    void handle(options, req, res);
  };
  let server: Server;
  if (options.tls) {
    const [cert, key, ca] = await Promise.all([readFile(options.tls.cert), readFile(options.tls.key), options.tls.clientCa ? readFile(options.tls.clientCa) : undefined]);
    server = createHttpsServer({ cert, key, ...(ca ? { ca, requestCert: true, rejectUnauthorized: true } : {}) }, handler);
  } else {
    server = createHttpServer(handler);
  }
  const unixPath = listen.startsWith("unix:") ? listen.slice("unix:".length) : undefined;
  await new Promise<void>((resolve, reject) => {
    const failed = (err: Error) => reject(new ModelCacheError("unavailable", `cannot listen on --hub-listen ${listen}: ${err.message}; choose another address`));
    server.once("error", failed);
    const bound = () => {
      server.off("error", failed);
      resolve();
    };
    if (unixPath !== undefined) server.listen(unixPath, bound);
    else {
      const split = listen.lastIndexOf(":");
      const host = listen.slice(0, split).replace(/^\[(.*)\]$/, "$1");
      server.listen(Number(listen.slice(split + 1)), host, bound);
    }
  });
  const address = unixPath !== undefined ? listen : `${listen.slice(0, listen.lastIndexOf(":"))}:${(server.address() as AddressInfo).port}`;
  return {
    address,
    async close(graceMs) {
      closing = true;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      // a connection whose response is under way is kept alive once it ends, until its client's
      // next request or the keep-alive timeout: it is closed as soon as it is idle instead
      for (const res of answering) res.once("close", () => server.closeIdleConnections());
      const timer = setTimeout(() => server.closeAllConnections(), graceMs);
      await closed;
      clearTimeout(timer);
      // node unlinks its own socket file on close; a leftover is not ours to keep
      if (unixPath !== undefined) await rm(unixPath, { force: true });
    },
  };
}

async function handle(options: HubServerOptions, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const started = performance.now();
  const method = req.method ?? "GET";
  let routeName = "unknown";
  let model: string | undefined;
  let caller = peerOf(req);
  let error: string | undefined;
  try {
    const url = new URL(req.url ?? "/", "http://hub.invalid");
    const route = parseHubPath(method, url.pathname);
    if (route) routeName = route.route;
    caller = authorizeRequest(options.authTokens, req.headers.authorization, caller);
    // a peer is answered from the store only: no route that could start a pull (and so a cascade through the fleet)
    if (isPeerRequest(req) && route?.route !== "blob") throw hubNotFound("EntryNotFound", `peer requests (X-Modelcache-Peer: 1) are answered only on /v2/{name}/blobs/sha256:{hex}, from this server's store; not ${method} ${url.pathname.slice(0, 200)}`);
    if (!route) throw new ModelCacheError("not_found", `no such route: ${method} ${url.pathname.slice(0, 200)} (this endpoint serves the Hugging Face Hub's download routes and /v2/{name}/blobs/sha256:{hex})`);
    model = await answerRoute(options.runtime, route, { req, res, url, caller, signal: requestSignal(res) }, (bytes) => options.recorder?.hubSent(bytes));
  } catch (err) {
    error = err instanceof ModelCacheError ? err.message : String(err);
    if (!(err instanceof ModelCacheError)) options.logger.error({ err, route: routeName }, "hub request failed");
    if (res.headersSent) res.destroy();
    else {
      const status = err instanceof ModelCacheError ? (STATUS_OF[err.kind] ?? 500) : 500;
      const code = hubErrorCodeOf(err);
      const text = JSON.stringify({ error: err instanceof ModelCacheError ? err.message : "internal error: see the server's log" });
      res.writeHead(status, { "Content-Type": "application/json", "Content-Length": String(Buffer.byteLength(text)), ...(code ? { "X-Error-Code": code } : {}), ...(status === 401 ? { "WWW-Authenticate": 'Bearer realm="modelcache"' } : {}) });
      res.end(method === "HEAD" ? undefined : text);
    }
  }
  const code = res.statusCode;
  options.recorder?.hubRequest(routeName, code);
  const fields = { route: routeName, method, model, caller, code, duration_ms: Math.round(performance.now() - started), error };
  if (options.logger.isLevelEnabled("info")) options.logger.info(fields, "hub");
  // as ResolveModel is: every use of a model, and every refusal, names its caller
  options.audit.info({ audit: true, caller, method: `hub ${method} ${routeName}`, model, result: code }, "audit");
}

/** Aborts when the client goes away before the answer is complete (a pull it started is then left, not waited for). */
function requestSignal(res: ServerResponse): AbortSignal {
  const controller = new AbortController();
  res.once("close", () => {
    if (!res.writableFinished) controller.abort(new ModelCacheError("cancelled", "the client closed the connection"));
  });
  return controller.signal;
}

function peerOf(req: IncomingMessage): string {
  const socket = req.socket as TLSSocket;
  const subject = typeof socket.getPeerCertificate === "function" ? socket.getPeerCertificate()?.subject?.CN : undefined;
  if (subject) return `CN=${subject}`;
  return `peer ${socket.remoteAddress ?? "unix socket"}:${socket.remotePort ?? ""}`;
}
