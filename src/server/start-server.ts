// Wires a running server: the registry, cache recovery, ModelCacheService,
// health and reflection, and a graceful shutdown that stops accepting calls,
// lets unary calls finish, cancels pull jobs (their staging dirs are
// removed) and closes LevelDB last.
import { checkProxyUrl, redactProxy } from "../sources/proxy-url.js";
import { mkdir } from "node:fs/promises";
import { join, resolve } from "node:path";
import { Server, type ServerCredentials } from "@grpc/grpc-js";
import { HealthImplementation } from "grpc-health-check";
import type { Logger } from "pino";
import { CacheLayout } from "../cache/layout.js";
import { recoverCacheRoot } from "../cache/recover-cache-root.js";
import { LISTEN_ADDRESS_FORM, isHostAndPort } from "./listen-address.js";
import { FileCopier } from "../cache/file-copier.js";
import { adoptInBackground, earlierInstalls } from "../maintenance/adopt-installs.js";
import { ContentStore, type KnownContent } from "../store/content-store.js";
import { clearIngest } from "../store/ingest-areas.js";
import { ModelLocks } from "../cache/model-lock.js";
import { reconcileRegistry } from "../lifecycle/reconcile-registry.js";
import { finishUnregistrations } from "../lifecycle/unregister-model.js";
import { markCondemned } from "../lifecycle/mark-condemned.js";
import { PullJobs } from "../pull/pull-jobs.js";
import { repairModel } from "../pull/repair-model.js";
import { PullQueue } from "../pull/pull-queue.js";
import { DEFAULT_PULL_LIMITS, type PullLimits } from "../pull/pull-limits.js";
import { Bandwidth } from "../sources/hub/bandwidth.js";
import { ModelCacheError, quote } from "../errors.js";
import { modelCacheService, modelCacheServiceDefinition } from "../grpc/model-cache-service.js";
import { guardCalls } from "../grpc/guard-calls.js";
import { limitStreams } from "../grpc/limit-streams.js";
import type { AccessTokens } from "../auth/access-tokens.js";
import { openRegistry } from "../registry/open-registry.js";
import { checkVaultKeyFile } from "../registry/vault-key.js";
import { Capacity, type CapacitySettings, DEFAULT_MIN_FREE_BYTES } from "../capacity/capacity.js";
import { warnBelowFreeFloor } from "../capacity/warn-below-free-floor.js";
import { BackgroundVerification, DEFAULT_VERIFY_BYTES_PER_SECOND, type VerificationSettings } from "../maintenance/background-verification.js";
import { UseRecorder } from "../registry/use-recorder.js";
import { DEFAULT_MAX_LEASE_SECONDS, type Lease, Leases, SWEEP_INTERVAL_MS } from "../consumers/leases.js";
import type { Runtime } from "../runtime.js";
import { createLogger } from "./logger.js";
import { PullLog } from "./pull-log.js";
import { addReflection } from "./reflection.js";
import { type TlsFiles, checkExposure, hostOf, isLoopback, serverCredentials } from "./transport-security.js";
import { FixtureRoots } from "../sources/fixture-roots.js";
import { ModelsFileFollower } from "../models-file/watch-models-file.js";

import { MODEL_CACHE_SERVICE as SERVICE_NAME } from "../grpc/method-path.js";

export interface ServerOptions {
  /** host:port; port 0 picks a free one */
  listen: string;
  dataDir: string;
  /** default <dataDir>/ai_models_cache */
  cacheDir?: string;
  fixtureDir?: string;
  /** directories a PullRequest's fixture_dir may lie in (the fixtureDir is one implicitly) */
  fixtureRoots?: string[];
  /** default 100 ms, about ten file_progress events a second */
  progressIntervalMs?: number;
  /** pulls running at once; more wait in a queue (default 2) */
  maxConcurrentPulls?: number;
  /** files of one pull copied at once (default 4) */
  fileConcurrency?: number;
  /** the hub to pull from when no fixture dir applies (default https://huggingface.co) */
  hubUrl?: string;
  /** the S3-compatible store s3:// sources are read from (default AWS S3) */
  s3Endpoint?: string;
  /** the region of s3:// sources (default us-east-1) */
  s3Region?: string;
  /** the proxy hub and S3 requests go through, overriding HTTPS_PROXY / HTTP_PROXY / NO_PROXY */
  proxy?: string;
  /** refuse every pull that needs the network */
  offline?: boolean;
  /** cap on the total download rate from the hub */
  maxBytesPerSecond?: number;
  /** LFS files at least this large are fetched as parallel byte ranges (default 64 MiB) */
  parallelRangeMinBytes?: number;
  /** host:port to serve Prometheus metrics on, at /metrics */
  metricsListen?: string;
  logger?: Logger;
  /** how long shutdown waits for calls before cutting them; default 10 s */
  shutdownGraceMs?: number;
  /** the tokens callers must present; without them, auth is off (loopback only) */
  authTokens?: AccessTokens;
  /** lets a server without auth listen beyond loopback */
  insecureNoAuth?: boolean;
  /** lets tokens be accepted beyond loopback without TLS (a proxy terminates it) */
  insecureNoTls?: boolean;
  tls?: TlsFiles;
  /** the vault key (32 bytes, mode 0600); default <dataDir>/vault.key */
  vaultKeyFile?: string;
  /** largest request message accepted (default 4 MiB) */
  maxMessageBytes?: number;
  /** calls one connection may have open at once, advertised to HTTP/2 so clients queue the rest (default 256) */
  maxConcurrentStreams?: number;
  /** what one pull may bring in */
  pullLimits?: Partial<PullLimits>;
  /** a YAML or JSON list of models the registry follows */
  modelsFile?: string;
  /** quiet time after a change to the models file before it is applied (default 500 ms) */
  modelsFileDebounceMs?: number;
  /** first delay before a failed background pull of a listed model is tried again (default 1 s) */
  modelsFileRetryMs?: number;
  /** the cache's quota in bytes; 0 (default): none */
  cacheMaxBytes?: number;
  /** the free space a pull must leave on the cache root's filesystem (default 1 GiB) */
  minFreeBytes?: number;
  /** re-hash the stored content this often (after each pass ends); unset: never */
  verifyIntervalMs?: number;
  /** the pace of that re-hashing (default 100 MiB/s) */
  verifyBytesPerSecond?: number;
  /** pull again in the background a model whose content the verification found corrupt (default on) */
  autoRepair?: boolean;
  /** the longest lease ResolveModel grants (default a day) */
  maxLeaseSeconds?: number;
}

/**
 * Calls one connection may have open at once unless --max-concurrent-streams
 * says otherwise. Clients queue what is past it (HTTP/2 tells them the limit),
 * so it bounds the work one connection can put on the server, not what a
 * client may ask for. 256 is above what common servers choose (nginx 128,
 * Go's net/http2 250) so that a client tuned for them is never held back.
 */
const DEFAULT_MAX_CONCURRENT_STREAMS = 256;
/** HTTP/2's SETTINGS_MAX_CONCURRENT_STREAMS is a 32-bit value */
const MAX_HTTP2_STREAMS = 2 ** 32 - 1;

export interface RunningServer {
  /** host:port actually bound */
  address: string;
  /** host:port of /metrics, when served */
  metricsAddress?: string;
  port: number;
  runtime: Runtime;
  /** follows --models-file, when given */
  modelsFile?: ModelsFileFollower;
  close(): Promise<void>;
}

/** Everything start needs, checked before anything opens. */
interface Settings {
  credentials: ServerCredentials;
  authenticated: boolean;
  fixtureRoots: FixtureRoots;
  dataDir: string;
  cacheRoot: string;
  fixtureDir: string | undefined;
  maxConcurrentPulls: number;
  progressIntervalMs: number;
  fileConcurrency: number;
  hub: Omit<Runtime["hub"], "bandwidth"> & { maxBytesPerSecond: number | undefined };
  s3: NonNullable<Runtime["s3"]>;
  proxy: string | undefined;
  pullLimits: PullLimits;
  maxStreams: number;
  maxMessageBytes: number;
  shutdownGraceMs: number;
  modelsFile: string | undefined;
  maxLeaseSeconds: number;
  capacity: CapacitySettings;
  verification: VerificationSettings | undefined;
}

/**
 * Checks every option (and reads the TLS files) without creating or opening
 * anything, so that a bad option leaves the data dir and the cache root as
 * they were.
 */
async function resolveSettings(options: ServerOptions): Promise<Settings> {
  // grpc-js also listens on unix:PATH
  if (!options.listen.startsWith("unix:")) checkAddress("--listen", options.listen);
  if (options.metricsListen !== undefined) checkAddress("--metrics-listen", options.metricsListen);
  checkExposure({
    listen: options.listen,
    tokens: options.authTokens !== undefined,
    tls: options.tls,
    insecureNoAuth: options.insecureNoAuth ?? false,
    insecureNoTls: options.insecureNoTls ?? false,
  });
  const maxLeaseSeconds = options.maxLeaseSeconds ?? DEFAULT_MAX_LEASE_SECONDS;
  // a year at most: a longer lease is an install nobody can ever evict or drop
  if (!Number.isInteger(maxLeaseSeconds) || maxLeaseSeconds < 1 || maxLeaseSeconds > 366 * 86_400) {
    throw new ModelCacheError("invalid_argument", `--max-lease-seconds must be a whole number from 1 to ${366 * 86_400} (a year) (got ${maxLeaseSeconds})`);
  }
  const capacity = { maxBytes: options.cacheMaxBytes ?? 0, minFreeBytes: options.minFreeBytes ?? DEFAULT_MIN_FREE_BYTES };
  for (const [flag, value] of [["--cache-max-bytes", capacity.maxBytes], ["--min-free-bytes", capacity.minFreeBytes]] as const) {
    if (!Number.isSafeInteger(value) || value < 0) throw new ModelCacheError("invalid_argument", `${flag} must be a whole number of bytes, 0 or more (got ${value})`);
  }
  const verification =
    options.verifyIntervalMs === undefined ? undefined : { intervalMs: options.verifyIntervalMs, bytesPerSecond: options.verifyBytesPerSecond ?? DEFAULT_VERIFY_BYTES_PER_SECOND, autoRepair: options.autoRepair ?? true };
  if (verification && (!Number.isSafeInteger(verification.intervalMs) || verification.intervalMs < 1)) {
    throw new ModelCacheError("invalid_argument", `--verify-interval must be a positive duration such as 30s, 15m or 6h (got ${verification.intervalMs} ms)`);
  }
  if (verification && (!Number.isSafeInteger(verification.bytesPerSecond) || verification.bytesPerSecond < 1)) {
    throw new ModelCacheError("invalid_argument", `--verify-bytes-per-second must be a size of at least 1 byte, such as 100MiB (got ${verification.bytesPerSecond})`);
  }
  const maxConcurrentPulls = options.maxConcurrentPulls ?? 2;
  if (!Number.isInteger(maxConcurrentPulls) || maxConcurrentPulls < 1) {
    throw new ModelCacheError("invalid_argument", `--max-concurrent-pulls must be a whole number of at least 1 (got ${maxConcurrentPulls})`);
  }
  const hub = {
    url: checkHubUrl(options.hubUrl ?? "https://huggingface.co"),
    offline: options.offline ?? false,
    maxBytesPerSecond: options.maxBytesPerSecond ? checkRate(options.maxBytesPerSecond) : undefined,
    parallelRangeMinBytes: checkRangeMinimum(options.parallelRangeMinBytes ?? 64 * 1024 * 1024),
  };
  const s3 = {
    endpoint: options.s3Endpoint !== undefined ? checkHttpUrl("--s3-endpoint", options.s3Endpoint, "http://127.0.0.1:9000") : undefined,
    region: checkRegion(options.s3Region ?? "us-east-1"),
  };
  const pullLimits = {
    maxFiles: checkLimit("--max-files-per-pull", options.pullLimits?.maxFiles ?? DEFAULT_PULL_LIMITS.maxFiles),
    maxFileBytes: checkLimit("--max-file-bytes", options.pullLimits?.maxFileBytes ?? DEFAULT_PULL_LIMITS.maxFileBytes),
    maxTotalBytes: checkLimit("--max-pull-bytes", options.pullLimits?.maxTotalBytes ?? DEFAULT_PULL_LIMITS.maxTotalBytes),
  };
  const maxStreams = checkLimit("--max-concurrent-streams", options.maxConcurrentStreams ?? DEFAULT_MAX_CONCURRENT_STREAMS, MAX_HTTP2_STREAMS);
  const maxMessageBytes = checkLimit("--max-message-bytes", options.maxMessageBytes ?? 4 * 1024 * 1024);
  const progressIntervalMs = checkLimit("the progress interval (ms)", options.progressIntervalMs ?? 100, Number.MAX_SAFE_INTEGER, 0);
  const fileConcurrency = checkLimit("--file-concurrency", options.fileConcurrency ?? 4);
  const shutdownGraceMs = checkLimit("the shutdown grace", options.shutdownGraceMs ?? 10_000);
  // the TLS files are read before anything else opens, so a bad one fails fast
  const credentials = await serverCredentials(options.tls);
  // a key file that exists must already be usable; a missing one is made once the registry is open
  if (options.vaultKeyFile !== undefined) await checkVaultKeyFile(options.vaultKeyFile);
  // callers prove who they are with a token or a client certificate
  const authenticated = options.authTokens !== undefined || options.tls?.clientCa !== undefined;
  const fixtureRoots = await FixtureRoots.resolve(options.fixtureRoots ?? [], options.fixtureDir, {
    openWithoutRoots: !authenticated && isLoopback(hostOf(options.listen)),
  });
  const dataDir = resolve(options.dataDir);
  return {
    credentials,
    authenticated,
    fixtureRoots,
    dataDir,
    cacheRoot: resolve(options.cacheDir ?? join(dataDir, "ai_models_cache")),
    fixtureDir: options.fixtureDir ? resolve(options.fixtureDir) : undefined,
    maxConcurrentPulls,
    maxLeaseSeconds,
    capacity,
    verification,
    progressIntervalMs,
    fileConcurrency,
    hub,
    s3,
    proxy: options.proxy !== undefined ? checkProxyUrl(options.proxy) : undefined,
    pullLimits,
    maxStreams,
    maxMessageBytes,
    shutdownGraceMs,
    modelsFile: options.modelsFile !== undefined ? resolve(options.modelsFile) : undefined,
  };
}

export async function startServer(options: ServerOptions): Promise<RunningServer> {
  const logger = options.logger ?? createLogger();
  const settings = await resolveSettings(options);
  const { dataDir, fixtureRoots, maxConcurrentPulls } = settings;
  // what start has opened so far, closed in reverse order if a later step fails
  const closers: { what: string; close: () => Promise<void> | void }[] = [];
  try {
    await mkdir(dataDir, { recursive: true });
    const registry = await openRegistry(dataDir, { vaultKeyFile: options.vaultKeyFile });
    closers.push({ what: "the registry", close: () => registry.close() });
    const layout = new CacheLayout(settings.cacheRoot);
    const locks = new ModelLocks(layout, { log: logger });
    const unregistered = await finishUnregistrations({ registry, layout, locks });
    if (unregistered.length > 0) logger.warn({ unregistered }, "finished unregistering models a crash interrupted");
    const registered = new Set(await registry.models.keys().all());
    const recovery = await recoverCacheRoot(layout, locks, registered);
    if (recovery.stagingRemoved + recovery.purgeRemoved + recovery.restored.length + recovery.skipped.length > 0) {
      logger.warn({ ...recovery }, "cleaned up after an unfinished run");
    }
    const reconciliation = await reconcileRegistry({ registry, layout }, AbortSignal.timeout(60_000));
    if (reconciliation.missing.length + reconciliation.unhealthy.length + reconciliation.recovered.length > 0) {
      logger.warn({ ...reconciliation }, "the registry did not match the cache: corrected from the disk");
    }
    const copier = new FileCopier();
    closers.push({ what: "the file copier", close: () => copier.close() });
    // servers sharing the cache root each write under their own ingest area (its lock never a model's: no dot in those); a dead one's is cleared
    const store = await new ContentStore(layout.root, registry.sublevel<KnownContent>("blobs"), registry.sublevel<string>("blob-ids"), (id) => locks.tryHold(`.ingest-${id}`)).open();
    closers.push({ what: "the content store's ingest area", close: () => store.close() });
    await clearIngest(store);
    await warnBelowFreeFloor(layout.root, settings.capacity.minFreeBytes, logger);
    // every detector of corrupt content (a pull, adoption, the background verification, a deep InspectCache) ends here;
    // what it needs exists only once the runtime is built
    let late: { runtime?: Runtime; verification?: BackgroundVerification; corruptFound?: () => void } = {};
    store.onCondemned(async (condemned) => {
      const marked = await markCondemned({ registry, layout, pulls: late.runtime?.pulls }, condemned);
      late.corruptFound?.();
      logger.error(
        { sha256: condemned.sha256, quarantined: condemned.quarantined, models: marked.unhealthy },
        "stored content no longer matches its sha256: quarantined; the models using it are UNHEALTHY until pulled again",
      );
      for (const name of new Set([...marked.unhealthy.map((m) => m.name), ...marked.pulling])) late.verification?.repair(name);
    });
    // only found here (a stat per file); adopted once the server listens
    const earlier = await earlierInstalls({ registry, layout });
    let running: Runtime | undefined;
    // prom-client is loaded only when metrics are served
    const metrics = options.metricsListen ? new (await import("./metrics.js")).Metrics(() => running) : undefined;
    const capacity = new Capacity(settings.capacity, () => runtime, logger, metrics ? [metrics] : []);
    // leases end with their model: those of a model whose unregistration a crash interrupted go
    const leases = await new Leases(registry.sublevel<Lease>("leases"), settings.maxLeaseSeconds).load(async (name) => {
      const record = await registry.models.get(name);
      return record !== undefined && !record.unregistering;
    });
    leases.startSweeping(SWEEP_INTERVAL_MS, {
      swept: (count) => (count > 0 ? logger.debug({ count }, "deleted the records of expired leases") : undefined),
      failed: (err) => logger.warn({ err }, "could not delete the records of expired leases; trying again at the next sweep"),
    });
    closers.push({ what: "the sweep of expired leases", close: () => leases.close() });
    const runtime: Runtime = {
      registry,
      layout,
      locks,
      pulls: new PullJobs({
        registry,
        layout,
        locks,
        queue: new PullQueue(maxConcurrentPulls),
        progressIntervalMs: settings.progressIntervalMs,
        fileConcurrency: settings.fileConcurrency,
        copier,
        store,
        recorders: [...(metrics ? [metrics] : []), new PullLog(logger)],
        capacity,
      }),
      copier,
      store,
      fixtureDir: settings.fixtureDir,
      fixtureRoots,
      hub: {
        url: settings.hub.url,
        offline: settings.hub.offline,
        bandwidth: settings.hub.maxBytesPerSecond ? new Bandwidth(settings.hub.maxBytesPerSecond) : undefined,
        parallelRangeMinBytes: settings.hub.parallelRangeMinBytes,
      },
      s3: settings.s3,
      network: { proxy: settings.proxy },
      pullLimits: settings.pullLimits,
      modelsFile: settings.modelsFile,
      leases,
      capacity,
      uses: new UseRecorder(registry),
    };
    const modelsFile = settings.modelsFile
      ? new ModelsFileFollower(runtime, {
          path: settings.modelsFile,
          logger,
          recorders: metrics ? [metrics] : [],
          debounceMs: options.modelsFileDebounceMs,
          retryMs: options.modelsFileRetryMs,
        })
      : undefined;
    if (modelsFile) {
      closers.push({ what: "the models file's watcher", close: () => modelsFile.close() });
      // before the server listens: callers never see the registry before the file is applied
      await modelsFile.start();
    }
    // a quota lowered since the last run holds from the start, once the models file's pins are in the registry
    await capacity.enforce(AbortSignal.timeout(3_600_000));

    const shutdown = new AbortController();
    const audit = auditLogger(logger);
    const server = new Server({
      "grpc.max_receive_message_length": settings.maxMessageBytes,
      // HTTP/2's SETTINGS_MAX_CONCURRENT_STREAMS: clients queue the calls past it
      "grpc.max_concurrent_streams": settings.maxStreams,
      // the guard first: authentication comes before every other check
      interceptors: [guardCalls(options.authTokens, (refusal) => audit.warn({ audit: true, ...refusal }, "audit")), limitStreams(settings.maxStreams)],
    });
    closers.push({ what: "the gRPC listener", close: () => server.forceShutdown() });
    running = runtime;
    server.addService(modelCacheServiceDefinition, modelCacheService(runtime, { logger, audit, shutdown: shutdown.signal, rpcs: metrics }));
    const health = new HealthImplementation({ "": "NOT_SERVING", [SERVICE_NAME]: "NOT_SERVING" });
    health.addToServer(server);
    addReflection(server);

    const verification = settings.verification ? new BackgroundVerification(runtime, settings.verification, (name, signal) => repairModel(runtime, name, logger, signal), logger, metrics ? [metrics] : []) : undefined;
    late = { runtime, verification, corruptFound: metrics ? () => metrics.corruptFound() : undefined };
    const metricsServer = metrics && options.metricsListen ? await metrics.serve(options.metricsListen) : undefined;
    if (metricsServer) closers.push({ what: "the metrics listener", close: () => metricsServer.close() });
    const port = await new Promise<number>((ok, fail) =>
      server.bindAsync(options.listen, settings.credentials, (err, bound) =>
        err ? fail(new ModelCacheError("unavailable", `cannot listen on ${options.listen}: ${err.message}; choose another --listen address`)) : ok(bound),
      ),
    );
    const host = options.listen.slice(0, options.listen.lastIndexOf(":"));
    const address = `${host}:${port}`;
    verification?.start();
    closers.push({ what: "the background verification", close: () => verification?.close() });
    const serving = () => {
      // never after close began: a shutting-down server is not serving
      if (shutdown.signal.aborted) return;
      health.setStatus("", "SERVING");
      health.setStatus(SERVICE_NAME, "SERVING");
    };
    // every RPC answers meanwhile, and an install not yet adopted is used as it is
    const adopting = earlier.length > 0 ? adoptInBackground(runtime, earlier, (path, signal) => copier.hash(path, signal), logger, shutdown.signal).then(serving) : serving();
    logger.info(
      { address, metrics: metricsServer?.address, modelsFile: settings.modelsFile, dataDir, cacheDir: layout.root, fixtureDir: runtime.fixtureDir, fixtureRoots: fixtureRoots.list, hubUrl: runtime.hub.url, ...(settings.proxy !== undefined ? { proxy: redactProxy(settings.proxy) } : {}), ...(settings.s3.endpoint !== undefined ? { s3Endpoint: settings.s3.endpoint } : {}), offline: runtime.hub.offline, maxConcurrentPulls, tls: options.tls ? (options.tls.clientCa ? "mutual" : "server") : "off", auth: options.authTokens ? `${options.authTokens.size} tokens` : options.tls?.clientCa ? "client certificates" : "off" },
      "modelcache is serving",
    );
    if (!settings.authenticated) logger.warn({ address }, "authentication is off: any process that can reach this address may call every RPC; give --auth-tokens FILE to require tokens");

    let closing: Promise<void> | undefined;
    const close = () =>
      (closing ??= (async () => {
        health.setStatus("", "NOT_SERVING");
        health.setStatus(SERVICE_NAME, "NOT_SERVING");
        const reason = new ModelCacheError("unavailable", "the server is shutting down: pull again once it is back");
        modelsFile?.close();
        const pullsEnded = runtime.pulls.abortAll(reason);
        const verificationEnded = verification?.close();
        shutdown.abort(reason);
        await new Promise<void>((done) => {
          const timer = setTimeout(() => {
            server.forceShutdown();
            done();
          }, settings.shutdownGraceMs);
          server.tryShutdown(() => {
            clearTimeout(timer);
            done();
          });
        });
        await pullsEnded;
        await verificationEnded;
        await adopting;
        await runtime.locks.idle();
        // after the operations that move content through the ingest area have ended
        await store.close();
        await runtime.uses.close();
        await leases.close();
        await copier.close();
        await metricsServer?.close();
        await registry.close();
        logger.info("modelcache stopped");
      })());
    return { address, port, runtime, modelsFile, close, metricsAddress: metricsServer?.address };
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
async function unwind(closers: { what: string; close: () => Promise<void> | void }[], logger: Logger): Promise<void> {
  for (const { what, close } of closers.reverse()) {
    try {
      await close();
    } catch (err) {
      logger.error({ err }, `could not close ${what} after a failed start`);
    }
  }
}

/** host:port with a port from 0 to 65535. */
function checkAddress(flag: string, address: string): void {
  if (!isHostAndPort(address)) throw new ModelCacheError("invalid_argument", `${flag} ${quote(address)} is malformed: give ${LISTEN_ADDRESS_FORM}`);
}

/** Audit lines are kept at any --log-level short of silent. */
function auditLogger(logger: Logger): Logger {
  return logger.level === "silent" ? logger : logger.child({}, { level: "info" });
}

function checkHubUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new ModelCacheError("invalid_argument", `--hub-url '${url.slice(0, 80)}' is not a URL; give one such as https://huggingface.co`);
  }
  if (parsed.protocol !== "https:" && parsed.protocol !== "http:") {
    throw new ModelCacheError("invalid_argument", `--hub-url must be an http(s) URL (got ${parsed.protocol})`);
  }
  return parsed.href;
}

function checkRate(bytesPerSecond: number): number {
  if (!Number.isFinite(bytesPerSecond) || bytesPerSecond < 1024) {
    throw new ModelCacheError("invalid_argument", `--max-bytes-per-second must be a number of at least 1024 (got ${bytesPerSecond})`);
  }
  return bytesPerSecond;
}

function checkLimit(flag: string, value: number, most = Number.MAX_SAFE_INTEGER, least = 1): number {
  if (!Number.isSafeInteger(value) || value < least || value > most) {
    throw new ModelCacheError("invalid_argument", `${flag} must be a whole number from ${least} to ${most} (got ${value})`);
  }
  return value;
}

function checkRangeMinimum(bytes: number): number {
  if (!Number.isSafeInteger(bytes) || bytes < 1024 * 1024) {
    throw new ModelCacheError("invalid_argument", `--parallel-range-min-bytes must be a whole number of at least 1048576 (got ${bytes})`);
  }
  return bytes;
}

function checkHttpUrl(flag: string, url: string, example: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new ModelCacheError("invalid_argument", `${flag} '${url.slice(0, 80)}' is not a URL; give one such as ${example}`);
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw new ModelCacheError("invalid_argument", `${flag} must be an http(s) URL such as ${example} (got ${parsed.protocol})`);
  }
  return url;
}

function checkRegion(region: string): string {
  if (!/^[a-z0-9-]{1,64}$/.test(region)) {
    throw new ModelCacheError("invalid_argument", `--s3-region '${region.slice(0, 80)}' is not a region name such as us-east-1`);
  }
  return region;
}
