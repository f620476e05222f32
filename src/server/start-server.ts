// Starts a server: settings checked before anything opens, the runtime
// opened (server-settings.ts, open-runtime.ts), the gRPC server bound
// (grpc-server.ts), background work started (verification, adoption of an
// earlier version's installs), and a graceful shutdown that stops accepting
// calls, lets unary calls finish, cancels pull jobs (their staging dirs are
// removed) and closes LevelDB last.
import type { Logger } from "pino";
import { ModelCacheError } from "../errors.js";
import { adoptInBackground } from "../maintenance/adopt-installs.js";
import { BackgroundVerification } from "../maintenance/background-verification.js";
import type { ModelsFileFollower } from "../models-file/watch-models-file.js";
import type { Runtime } from "../runtime.js";
import { redactProxy } from "../sources/proxy-url.js";
import { auditLogger, createGrpcServer } from "./grpc-server.js";
import { createLogger } from "./logger.js";
import { type Closer, openRuntime } from "./open-runtime.js";
import { type ServerOptions, resolveSettings } from "./server-settings.js";

export type { ServerOptions } from "./server-settings.js";

export interface RunningServer {
  /** host:port actually bound */
  address: string;
  /** host:port of /metrics, when served */
  metricsAddress?: string;
  /** host:port (or unix:PATH) of the hub endpoint, when served (--hub-listen) */
  hubAddress?: string;
  port: number;
  runtime: Runtime;
  /** follows --models-file, when given */
  modelsFile?: ModelsFileFollower;
  close(): Promise<void>;
}

export async function startServer(options: ServerOptions): Promise<RunningServer> {
  const logger = options.logger ?? createLogger();
  const settings = await resolveSettings(options);
  // what start has opened so far, closed in reverse order if a later step fails
  const closers: Closer[] = [];
  try {
    const { runtime, metrics, modelsFile, earlier, repairs, noticeQuarantine } = await openRuntime(settings, options, logger, closers);
    const shutdown = new AbortController();
    const grpc = createGrpcServer({ runtime, logger, shutdown: shutdown.signal, authTokens: options.authTokens, maxMessageBytes: settings.maxMessageBytes, maxStreams: settings.maxStreams, metrics });
    closers.push({ what: "the gRPC listener", close: () => grpc.server.forceShutdown() });
    const verification = settings.verification ? new BackgroundVerification(runtime, settings.verification, logger, metrics ? [metrics] : [], noticeQuarantine) : undefined;
    const metricsServer = metrics && options.metricsListen ? await metrics.serve(options.metricsListen) : undefined;
    if (metricsServer) closers.push({ what: "the metrics listener", close: () => metricsServer.close() });
    // loaded only when served: a server without --hub-listen never loads the HTTP routes
    const hub = options.hubListen
      ? await (await import("../hub-endpoint/hub-server.js")).startHubServer(options.hubListen, { runtime, logger, audit: auditLogger(logger), authTokens: options.authTokens, tls: options.tls, recorder: metrics })
      : undefined;
    if (hub) closers.push({ what: "the hub endpoint", close: () => hub.close(0) });
    // the port bound is known now (--hub-listen with port 0): no peer request goes to it
    runtime.peers?.list?.setOwnEndpoint(hub?.address);
    const port = await grpc.listen(options.listen, settings.credentials);
    const host = options.listen.slice(0, options.listen.lastIndexOf(":"));
    const address = `${host}:${port}`;
    verification?.start();
    closers.push({ what: "the background verification", close: () => verification?.close() });
    // never after close began: a shutting-down server is not serving
    const serving = () => (shutdown.signal.aborted ? undefined : grpc.setHealth("SERVING"));
    // every RPC answers meanwhile, and an install not yet adopted is used as it is
    const adopting = earlier.length > 0 ? adoptInBackground(runtime, earlier, (path, signal) => runtime.copier.hash(path, signal), logger, shutdown.signal).then(serving) : serving();
    logger.info(
      {
        address,
        metrics: metricsServer?.address,
        hub: hub?.address,
        modelsFile: settings.modelsFile,
        dataDir: settings.dataDir,
        cacheDir: runtime.layout.root,
        fixtureDir: runtime.fixtureDir,
        fixtureRoots: runtime.fixtureRoots.list,
        hubUrl: runtime.hub.url,
        ...(settings.proxy !== undefined ? { proxy: redactProxy(settings.proxy) } : {}),
        ...(settings.s3.endpoint !== undefined ? { s3Endpoint: settings.s3.endpoint } : {}),
        offline: runtime.hub.offline,
        ...(settings.peers.entries.length > 0 ? { peers: settings.peers.entries.map((e) => (e.kind === "url" ? e.url : `dns:${e.name}:${e.port}`)) } : {}),
        maxConcurrentPulls: settings.maxConcurrentPulls,
        tls: options.tls ? (options.tls.clientCa ? "mutual" : "server") : "off",
        auth: options.authTokens ? `${options.authTokens.size} tokens` : options.tls?.clientCa ? "client certificates" : "off",
      },
      "modelcache is serving",
    );
    if (!settings.authenticated) logger.warn({ address }, "authentication is off: any process that can reach this address may call every RPC; give --auth-tokens FILE to require tokens");

    let closing: Promise<void> | undefined;
    const close = () =>
      (closing ??= (async () => {
        grpc.setHealth("NOT_SERVING");
        const reason = new ModelCacheError("unavailable", "the server is shutting down: pull again once it is back");
        modelsFile?.close();
        const pullsEnded = runtime.pulls.abortAll(reason);
        const verificationEnded = verification?.close();
        const repairsEnded = repairs.close();
        shutdown.abort(reason);
        await new Promise<void>((done) => {
          const timer = setTimeout(() => {
            grpc.server.forceShutdown();
            done();
          }, settings.shutdownGraceMs);
          grpc.server.tryShutdown(() => {
            clearTimeout(timer);
            done();
          });
        });
        // downloads under way get the same grace as calls, before the store and the registry close
        await hub?.close(settings.shutdownGraceMs);
        await pullsEnded;
        await verificationEnded;
        await repairsEnded;
        await adopting;
        await runtime.locks.idle();
        // after the operations that move content through the ingest area have ended
        await runtime.store.close();
        // its count of links to stored content must not outlive it: footprints of any later server read the counts
        runtime.view?.close();
        runtime.peers?.list?.close();
        await runtime.uses.close();
        await runtime.leases.close();
        await runtime.copier.close();
        await metricsServer?.close();
        await runtime.registry.close();
        logger.info("modelcache stopped");
      })());
    return { address, port, runtime, modelsFile, close, metricsAddress: metricsServer?.address, hubAddress: hub?.address };
  } catch (err) {
    await unwind(closers, logger);
    throw err;
  }
}

/**
 * Closes what a failed start had opened, last first. A closer that fails is
 * logged and the others still run: the error that stopped the start is the
 * one the caller must see, and one stuck listener must not keep LevelDB open.
 */
async function unwind(closers: Closer[], logger: Logger): Promise<void> {
  for (const { what, close } of closers.reverse()) {
    try {
      await close();
    } catch (err) {
      logger.error({ err }, `could not close ${what} after a failed start`);
    }
  }
}
