// The gRPC server: the guard (authentication, roles) and the stream limit in
// front of ModelCacheService, health (NOT_SERVING until start says
// otherwise) and reflection, bound to --listen.
import { Server, type ServerCredentials } from "@grpc/grpc-js";
import { HealthImplementation } from "grpc-health-check";
import type { Logger } from "pino";
import type { AccessTokens } from "../auth/access-tokens.js";
import { ModelCacheError } from "../errors.js";
import { guardCalls } from "../grpc/guard-calls.js";
import { limitStreams } from "../grpc/limit-streams.js";
import { MODEL_CACHE_SERVICE } from "../grpc/method-path.js";
import { modelCacheService, modelCacheServiceDefinition } from "../grpc/model-cache-service.js";
import type { Runtime } from "../runtime.js";
import type { Metrics } from "./metrics.js";
import { addReflection } from "./reflection.js";

export interface GrpcServer {
  server: Server;
  /** "SERVING" or "NOT_SERVING", for the whole server and ModelCacheService alike */
  setHealth(status: "SERVING" | "NOT_SERVING"): void;
  /** binds --listen; the port bound */
  listen(address: string, credentials: ServerCredentials): Promise<number>;
}

export interface GrpcServerOptions {
  runtime: Runtime;
  logger: Logger;
  /** aborts every pull when the server shuts down */
  shutdown: AbortSignal;
  authTokens: AccessTokens | undefined;
  maxMessageBytes: number;
  maxStreams: number;
  metrics: Metrics | undefined;
}

export function createGrpcServer(options: GrpcServerOptions): GrpcServer {
  const { logger } = options;
  const audit = auditLogger(logger);
  const server = new Server({
    "grpc.max_receive_message_length": options.maxMessageBytes,
    // HTTP/2's SETTINGS_MAX_CONCURRENT_STREAMS: clients queue the calls past it
    "grpc.max_concurrent_streams": options.maxStreams,
    // nothing reads channelz (no channelz service is served): its counting per call and message is work for no one
    "grpc.enable_channelz": 0,
    // the guard first: authentication comes before every other check
    interceptors: [guardCalls(options.authTokens, (refusal) => audit.warn({ audit: true, ...refusal }, "audit")), limitStreams(options.maxStreams)],
  });
  server.addService(modelCacheServiceDefinition, modelCacheService(options.runtime, { logger, audit, shutdown: options.shutdown, rpcs: options.metrics }));
  const health = new HealthImplementation({ "": "NOT_SERVING", [MODEL_CACHE_SERVICE]: "NOT_SERVING" });
  health.addToServer(server);
  addReflection(server);
  return {
    server,
    setHealth(status) {
      health.setStatus("", status);
      health.setStatus(MODEL_CACHE_SERVICE, status);
    },
    listen: (address, credentials) =>
      new Promise<number>((ok, fail) =>
        server.bindAsync(address, credentials, (err, bound) =>
          err ? fail(new ModelCacheError("unavailable", `cannot listen on ${address}: ${err.message}; choose another --listen address`)) : ok(bound),
        ),
      ),
  };
}

/** Audit lines are kept at any --log-level short of silent. */
export function auditLogger(logger: Logger): Logger {
  return logger.level === "silent" ? logger : logger.child({}, { level: "info" });
}
