// An in-process modelcache server on port 0 with its own temp data dir, and
// a generated client talking to it over real gRPC. Every test builds one and
// closes it, which removes the temp dir.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type ClientReadableStream, Metadata, type ServiceError, credentials } from "@grpc/grpc-js";
import { pino } from "pino";
import { type RequestOf, type UnaryName, call } from "../../src/cli/client.js";
import { makeSourceDir } from "./source-dir.js";
import { type RunningServer, type ServerOptions, startServer } from "../../src/server/start-server.js";
import {
  CacheStatus,
  Engine,
  type ModelSpec,
  ModelCacheServiceClient,
  type PullRequest,
  type PullResponse,
  PullPolicy,
  Task,
  TrustPolicy,
} from "../../generated/modelcache/v1/model_cache.js";

export const FIXTURE_DIR = join(import.meta.dirname, "..", "..", "fixtures", "tiny-minilm");

export interface TestServer {
  server: RunningServer;
  client: ModelCacheServiceClient;
  dataDir: string;
  cacheRoot: string;
  /** stops the server and starts a new one on the same data dir */
  restart(options?: Partial<ServerOptions>): Promise<void>;
  close(): Promise<void>;
}

export async function startTestServer(options: Partial<ServerOptions> = {}): Promise<TestServer> {
  // a data dir the test gives (e.g. on a small disk) is the test's to remove
  const ownDataDir = options.dataDir === undefined;
  const dataDir = options.dataDir ?? (await mkdtemp(join(tmpdir(), "modelcache-test-")));
  const start = (extra: Partial<ServerOptions>) =>
    // offline unless a test points the server at its own hub: tests never reach the internet
    startServer({
      listen: "127.0.0.1:0",
      dataDir,
      logger: pino({ level: "silent" }),
      offline: options.hubUrl === undefined,
      // repairs run in the background and would race what a test looks at: a test of repair asks for it
      autoRepair: false,
      ...options,
      ...extra,
    });
  const connect = (server: RunningServer) => new ModelCacheServiceClient(server.address, credentials.createInsecure());
  const state = { server: await start({}), client: undefined as unknown as ModelCacheServiceClient };
  state.client = connect(state.server);
  const test: TestServer = {
    get server() {
      return state.server;
    },
    get client() {
      return state.client;
    },
    dataDir,
    cacheRoot: options.cacheDir ?? join(dataDir, "ai_models_cache"),
    async restart(extra = {}) {
      state.client.close();
      await state.server.close();
      state.server = await start(extra);
      state.client = connect(state.server);
    },
    async close() {
      state.client.close();
      await state.server.close();
      if (ownDataDir) await rm(dataDir, { recursive: true, force: true });
    },
  };
  return test;
}

/**
 * Mocha hooks for a suite whose every test gets a fresh server with the model
 * "minilm" registered, and temporary source directories removed afterwards.
 */
export function serverWithModel(): { readonly t: TestServer; source(files: Record<string, string | Buffer>): Promise<string> } {
  let current: TestServer | undefined;
  const cleanups: (() => Promise<void>)[] = [];
  beforeEach(async () => {
    current = await startTestServer();
    await call(current.client, "registerModel", { model: modelSpec() });
  });
  afterEach(async () => {
    await current?.close();
    for (const cleanup of cleanups.splice(0)) await cleanup();
  });
  return {
    get t() {
      return current!;
    },
    async source(files) {
      const made = await makeSourceDir(files);
      cleanups.push(made.cleanup);
      return made.dir;
    },
  };
}

/** A spec that registers cleanly; override what a test is about. */
export function modelSpec(overrides: Partial<ModelSpec> = {}): ModelSpec {
  return {
    name: "minilm",
    source: "sentence-transformers/all-MiniLM-L6-v2",
    revision: "main",
    task: Task.TASK_EMBEDDING,
    dimensions: 384,
    engine: Engine.ENGINE_UNSPECIFIED,
    pullPolicy: PullPolicy.PULL_POLICY_UNSPECIFIED,
    trustPolicy: TrustPolicy.TRUST_POLICY_UNSPECIFIED,
    acknowledgeRemoteCodeRisk: false,
    credentialAlias: "",
    include: [],
    exclude: [],
    pinned: false,
    ...overrides,
  };
}

// one typed unary call serves the CLI, the tests and the benchmarks
export { call };

/** Calls a unary method expecting it to fail, and resolves with the error. */
export async function callError<K extends UnaryName>(client: ModelCacheServiceClient, method: K, request: RequestOf<K>, metadata = new Metadata()): Promise<ServiceError> {
  try {
    await call(client, method, request, metadata);
  } catch (err) {
    return err as ServiceError;
  }
  throw new Error("expected the call to fail, it succeeded");
}

export interface PullOutcome {
  events: PullResponse[];
  error?: ServiceError;
}

/**
 * Runs a Pull to its end and collects every event and the final error, if
 * any. A stream that ends without an error must end with `completed`: the
 * promise rejects otherwise, whatever the test expected.
 */
export function pull(
  client: ModelCacheServiceClient,
  request: Partial<PullRequest> & { name: string },
  options: { metadata?: Metadata; deadline?: Date; onEvent?: (event: PullResponse, stream: ClientReadableStream<PullResponse>) => void } = {},
): Promise<PullOutcome> {
  const stream = client.pull({ fixtureDir: "", credentialAlias: "", force: false, detach: false, ...request }, options.metadata ?? new Metadata(), { deadline: options.deadline });
  const events: PullResponse[] = [];
  return new Promise((resolve, reject) => {
    stream.on("data", (event: PullResponse) => {
      events.push(event);
      options.onEvent?.(event, stream);
    });
    stream.on("error", (error: ServiceError) => resolve({ events, error }));
    stream.on("end", () => {
      const last = events.at(-1);
      if (last?.completed === undefined) {
        reject(new Error(`the pull of '${request.name}' ended without an error and without 'completed' (last event: ${last ? kindOf(last) : "none"})`));
      } else {
        resolve({ events });
      }
    });
  });
}

/** Runs a Pull that must succeed: no error, and a last event `completed` with the install INSTALLED; returns its events. */
export async function pullOk(client: ModelCacheServiceClient, request: Partial<PullRequest> & { name: string }): Promise<PullResponse[]> {
  const outcome = await pull(client, request);
  if (outcome.error) throw outcome.error;
  const completed = outcome.events.at(-1)!.completed!;
  if (completed.status !== CacheStatus.CACHE_STATUS_INSTALLED) throw new Error(`the pull of '${request.name}' completed with status ${completed.status}, not INSTALLED`);
  return outcome.events;
}

/** Runs a Pull that must fail; resolves with its error and the events sent before it. */
export async function pullError(
  client: ModelCacheServiceClient,
  request: Partial<PullRequest> & { name: string },
  options: Parameters<typeof pull>[2] = {},
): Promise<{ error: ServiceError; events: PullResponse[] }> {
  const outcome = await pull(client, request, options);
  if (!outcome.error) throw new Error(`expected the pull of '${request.name}' to fail, it completed`);
  return { error: outcome.error, events: outcome.events };
}

/** The event kind of a PullResponse: "started", "fileStarted", ... */
export function kindOf(event: PullResponse): string {
  const kinds = ["queued", "started", "fileStarted", "fileProgress", "fileCompleted", "completed"] as const;
  return kinds.find((k) => event[k] !== undefined) ?? "none";
}
