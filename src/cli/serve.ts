// `modelcache serve`: starts the server with the parsed flags and stops it
// on SIGINT/SIGTERM. Loaded only by that command, so that client commands
// never load the server, its dependencies or LevelDB.
import { stat } from "node:fs/promises";
import { format } from "node:util";
import { setLogger } from "@grpc/grpc-js";
import type { Logger } from "pino";
import { ModelCacheError, quote } from "../errors.js";
import { type LogFormat, createLogger } from "../server/logger.js";
import { startServer } from "../server/start-server.js";
import { releaseYoungGeneration } from "../server/young-generation.js";
import { keepHttpParserOnBaselineCompiler } from "../server/http-parser-tier.js";
import { AccessTokens } from "../auth/access-tokens.js";
import { parseDuration, parseSize } from "./parse-units.js";

export interface ServeOptions {
  listen: string;
  /** absent when the user has no home directory to put the default under */
  dataDir?: string;
  cacheDir?: string;
  fixtureDir?: string;
  fixtureRoot?: string[];
  maxConcurrentPulls: string;
  hubUrl?: string;
  s3Endpoint?: string;
  s3Region?: string;
  ociPlainHttp?: string;
  proxy?: string;
  offline: boolean;
  maxBytesPerSecond?: string;
  parallelRangeMinBytes: string;
  parallelRangeBelowBytesPerSecond: string;
  directWrites: boolean;
  metricsListen?: string;
  hubListen?: string;
  peers?: string;
  peerTokenFile?: string;
  peerMaxBytesPerSecond?: string;
  hfCacheDir?: string;
  logLevel: "info";
  logFormat: LogFormat;
  authTokens?: string;
  insecureNoAuth: boolean;
  insecureNoTls: boolean;
  tlsCert?: string;
  tlsKey?: string;
  tlsClientCa?: string;
  vaultKeyFile?: string;
  maxMessageBytes: string;
  maxConcurrentStreams: string;
  maxFilesPerPull: string;
  maxFileBytes: string;
  maxPullBytes: string;
  modelsFile?: string;
  maxLeaseSeconds: string;
  cacheMaxBytes: string;
  minFreeBytes: string;
  verifyInterval?: string;
  verifyBytesPerSecond: string;
  autoRepair: boolean;
}

/**
 * grpc-js prints its own lines ("E No address added ...") to stderr, outside
 * the log's format; each error it logs also reaches our code, which reports it.
 * Its lines go to our logger at debug level, unless the operator asked for
 * grpc-js's own output with GRPC_VERBOSITY / GRPC_TRACE.
 */
function routeGrpcLogs(logger: Logger): void {
  const env = process.env;
  if (env.GRPC_NODE_VERBOSITY || env.GRPC_VERBOSITY || env.GRPC_NODE_TRACE || env.GRPC_TRACE) return;
  const toDebug = (message: unknown, ...rest: unknown[]) => logger.debug({ component: "grpc-js" }, format(message, ...rest));
  setLogger({ error: toDebug, info: toDebug, debug: toDebug });
}

export async function serve(options: ServeOptions): Promise<void> {
  const logger = createLogger(options.logLevel, options.logFormat);
  routeGrpcLogs(logger);
  if (options.modelsFile !== undefined) {
    // an invalid models file is a configuration error, like a bad flag: exit 2, naming the file, the line and the field
    try {
      // loaded only with --models-file: the YAML parser is memory a server without one never needs
      const { readModelsFile } = await import("../models-file/parse-models-file.js");
      await readModelsFile(options.modelsFile);
    } catch (err) {
      logger.fatal({ error: (err as Error).message }, "modelcache could not start: the models file is invalid");
      process.exit(2);
    }
  }
  if (options.dataDir === undefined) {
    logger.fatal({ error: "no home directory to put the default data dir under (HOME is unset and the user has no passwd entry): give --data-dir or MODELCACHE_DATA_DIR" }, "modelcache could not start: --data-dir is needed");
    process.exit(2);
  }
  if (options.fixtureDir !== undefined && !(await isDirectory(options.fixtureDir))) {
    // a mistyped default source would otherwise surface only at the first pull that falls back to it
    logger.fatal({ error: `--fixture-dir ${quote(options.fixtureDir)} does not exist or is not a directory: create it, or correct or leave out the flag` }, "modelcache could not start: --fixture-dir is not a directory");
    process.exit(2);
  }
  let server;
  let tokens: AccessTokens | undefined;
  try {
    if (Boolean(options.tlsCert) !== Boolean(options.tlsKey)) {
      throw new ModelCacheError("invalid_argument", "--tls-cert and --tls-key go together: give both, or neither for plaintext");
    }
    if (options.tlsClientCa && !options.tlsCert) throw new ModelCacheError("invalid_argument", "--tls-client-ca needs --tls-cert and --tls-key: mTLS is TLS first");
    tokens = options.authTokens ? await AccessTokens.load(options.authTokens) : undefined;
    // before the models file or a call starts the first download
    keepHttpParserOnBaselineCompiler();
    server = await startServer({
      authTokens: tokens,
      insecureNoAuth: options.insecureNoAuth,
      insecureNoTls: options.insecureNoTls,
      tls: options.tlsCert && options.tlsKey ? { cert: options.tlsCert, key: options.tlsKey, clientCa: options.tlsClientCa } : undefined,
      listen: options.listen,
      dataDir: options.dataDir,
      cacheDir: options.cacheDir,
      fixtureDir: options.fixtureDir,
      fixtureRoots: options.fixtureRoot,
      vaultKeyFile: options.vaultKeyFile,
      maxMessageBytes: Number(options.maxMessageBytes),
      maxConcurrentStreams: Number(options.maxConcurrentStreams),
      // sizes and durations: a default is given as text ('1GiB', '1d') and reaches here unparsed
      pullLimits: { maxFiles: Number(options.maxFilesPerPull), maxFileBytes: parseSize(options.maxFileBytes), maxTotalBytes: parseSize(options.maxPullBytes) },
      maxConcurrentPulls: Number(options.maxConcurrentPulls),
      hubUrl: options.hubUrl ?? process.env.HF_ENDPOINT ?? undefined,
      s3Endpoint: options.s3Endpoint ?? (process.env.AWS_ENDPOINT_URL || undefined),
      s3Region: options.s3Region ?? (process.env.AWS_REGION || undefined),
      ociPlainHttp: (options.ociPlainHttp ?? "").split(",").map((entry) => entry.trim()).filter((entry) => entry !== ""),
      proxy: options.proxy,
      offline: options.offline || process.env.HF_HUB_OFFLINE === "1",
      maxBytesPerSecond: options.maxBytesPerSecond === undefined ? undefined : parseSize(options.maxBytesPerSecond),
      parallelRangeMinBytes: parseSize(options.parallelRangeMinBytes),
      parallelRangeBelowBytesPerSecond: parseSize(options.parallelRangeBelowBytesPerSecond),
      directWrites: options.directWrites,
      metricsListen: options.metricsListen,
      hubListen: options.hubListen,
      peers: options.peers,
      peerTokenFile: options.peerTokenFile,
      peerMaxBytesPerSecond: options.peerMaxBytesPerSecond === undefined ? undefined : parseSize(options.peerMaxBytesPerSecond),
      hfCacheDir: options.hfCacheDir,
      modelsFile: options.modelsFile,
      maxLeaseSeconds: parseDuration(options.maxLeaseSeconds),
      cacheMaxBytes: Number(options.cacheMaxBytes),
      minFreeBytes: parseSize(options.minFreeBytes),
      verifyIntervalMs: options.verifyInterval === undefined ? undefined : Number(options.verifyInterval) * 1000,
      verifyBytesPerSecond: parseSize(options.verifyBytesPerSecond),
      autoRepair: options.autoRepair,
      logger,
    });
    // started: what the start left in the young generation is garbage, and calls may grow it again
    releaseYoungGeneration();
  } catch (err) {
    logger.fatal(err instanceof ModelCacheError ? { error: err.message } : { err }, "modelcache could not start");
    // a setting to change (a flag's value, a cache root without hard links) exits like a usage error
    process.exit(err instanceof ModelCacheError && err.kind === "invalid_argument" ? 2 : 1);
  }
  const running = server;
  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) {
      logger.warn({ signal }, "second signal: exiting now");
      process.exit(1);
    }
    stopping = true;
    logger.info({ signal }, "shutting down");
    running.close().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  const follower = running.modelsFile;
  const accepted = tokens;
  // SIGHUP reads again what an operator edits in place: the models file and the --auth-tokens file
  if (follower || accepted) {
    process.on("SIGHUP", () => {
      if (accepted) {
        accepted.reload().then(
          (count) => logger.info({ signal: "SIGHUP", file: options.authTokens, tokens: count }, "reloaded the --auth-tokens file"),
          (err: unknown) => logger.error({ signal: "SIGHUP", error: (err as Error).message }, "the --auth-tokens file was not reloaded: the tokens accepted before stay"),
        );
      }
      if (follower) {
        logger.info({ signal: "SIGHUP" }, "applying the models file again");
        void follower.reload();
      }
    });
  }
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    // missing or unreadable: either way the server could not pull from it
    return false;
  }
}
