// A service that needs a model: make sure it is registered and installed,
// then use its files. The client is generated from modelcache's proto with
// ts-proto (see "Using modelcache from another service" in docs/serving.md); CI
// type-checks this file against the generated code.
//
//   npx tsx examples/client.ts [address] [source]
//
// source: a hub repo id (default sentence-transformers/all-MiniLM-L6-v2), or a
// local directory to install from instead of the hub (works offline; the
// server must allow it with --fixture-root, or be the server's --fixture-dir).
import { isAbsolute, resolve } from "node:path";
import { Metadata, type ServiceError, credentials } from "@grpc/grpc-js";
import { CacheStatus, ModelCacheServiceClient, ModelSpec, PullRequest, type PullResponse, Task, cacheStatusToJSON } from "../generated/modelcache/v1/model_cache.js";

const address = process.argv[2] ?? process.env.MODELCACHE_ADDRESS ?? "127.0.0.1:50051";
const source = process.argv[3] ?? "sentence-transformers/all-MiniLM-L6-v2";
// a path (it starts with '.' or '/') is a directory to install from; anything else is a hub repo id
const fixtureDir = source.startsWith(".") || isAbsolute(source) ? resolve(source) : "";
const client = new ModelCacheServiceClient(address, credentials.createInsecure());

// a server started with --auth-tokens wants a bearer token on every call
const metadata = new Metadata();
if (process.env.MODELCACHE_TOKEN) metadata.set("authorization", `Bearer ${process.env.MODELCACHE_TOKEN}`);

// fromPartial fills every field left out with its default
const spec = ModelSpec.fromPartial({
  name: "minilm",
  // the model's source must be a hub repo id; a pull from a directory names the directory instead
  source: fixtureDir ? "sentence-transformers/all-MiniLM-L6-v2" : source,
  // a full commit sha pins the exact files; a branch is resolved at pull time
  revision: "main",
  task: Task.TASK_EMBEDDING,
  dimensions: 384,
  include: ["*.json", "*.safetensors", "*.txt"],
});

/** Registers the model unless it already is (ALREADY_EXISTS is fine). */
function ensureRegistered(): Promise<void> {
  return new Promise((resolve, reject) =>
    client.registerModel({ model: spec }, metadata, (err) => (!err || err.code === 6 /* ALREADY_EXISTS */ ? resolve() : reject(err))),
  );
}

/** Pulls the model, printing progress, and resolves with the install dir. */
function pull(name: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const stream = client.pull(PullRequest.fromPartial({ name, fixtureDir }), metadata);
    stream.on("data", (event: PullResponse) => {
      if (event.started) console.log(`pulling ${name} from ${event.started.source}: ${event.started.fileCount} files`);
      if (event.fileCompleted) console.log(`  ${event.fileCompleted.path} sha256:${event.fileCompleted.sha256.slice(0, 12)}`);
      if (event.completed) resolve(event.completed.cacheDir);
    });
    stream.on("error", reject);
  });
}

function status(name: string): Promise<CacheStatus> {
  return new Promise((resolve, reject) =>
    client.inspectCache({ name, deep: false }, metadata, (err, response) => (err ? reject(err) : resolve(response!.status))),
  );
}

try {
  await ensureRegistered();
  const before = await status(spec.name);
  console.log(`before: ${cacheStatusToJSON(before)}`);
  if (before === CacheStatus.CACHE_STATUS_INSTALLED) console.log("already installed: pulling again reuses every unchanged file");
  const dir = await pull(spec.name);
  console.log(`installed at ${dir}; the files are read from there, the manifest is ${dir}/manifest.json`);
} catch (err) {
  // one line a person can act on (the server's message names the cause), not a stack trace
  console.error(`error: ${(err as ServiceError).details ?? (err as Error).message}`);
  process.exitCode = 1;
} finally {
  client.close();
}
