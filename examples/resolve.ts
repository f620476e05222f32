// A service that uses a model: one ResolveModel call gives the path of a
// healthy install (pulled first if the model's policy says so), under a lease
// that keeps it from eviction and DropCache while the service reads it. The
// service loads config.json from that path, then releases the lease.
//
//   npx tsx examples/resolve.ts [address] [model]
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { Metadata, type ServiceError, credentials } from "@grpc/grpc-js";
import { ModelCacheServiceClient, PullPolicy, type ResolveModelResponse } from "../generated/modelcache/v1/model_cache.js";

const address = process.argv[2] ?? process.env.MODELCACHE_ADDRESS ?? "127.0.0.1:50051";
const name = process.argv[3] ?? "minilm";
const client = new ModelCacheServiceClient(address, credentials.createInsecure());
const metadata = new Metadata();
if (process.env.MODELCACHE_TOKEN) metadata.set("authorization", `Bearer ${process.env.MODELCACHE_TOKEN}`);

function resolveModel(): Promise<ResolveModelResponse> {
  return new Promise((resolve, reject) =>
    client.resolveModel(
      // IF_MISSING: use what is installed, pull only what is not; a lease of an hour
      { name, pullPolicy: PullPolicy.PULL_POLICY_IF_MISSING, leaseSeconds: 3600, credentialAlias: "" },
      metadata,
      // a pull may take a while: give the call a deadline that fits the model's size
      { deadline: Date.now() + 10 * 60_000 },
      (err, response) => (err ? reject(err) : resolve(response!)),
    ),
  );
}

function releaseLease(leaseId: string): Promise<boolean> {
  return new Promise((resolve, reject) => client.releaseLease({ leaseId }, metadata, (err, response) => (err ? reject(err) : resolve(response!.released))));
}

try {
  const resolved = await resolveModel();
  console.log(`${name} at ${resolved.cacheDir} (${resolved.pulled ? "pulled now" : "already installed"}), lease ${resolved.leaseId} until ${resolved.leaseExpiresAt?.toISOString()}`);
  try {
    const config = JSON.parse(await readFile(join(resolved.cacheDir, "config.json"), "utf8")) as Record<string, unknown>;
    console.log(`config.json has ${Object.keys(config).length} keys`);
  } finally {
    console.log(`lease released: ${await releaseLease(resolved.leaseId)}`);
  }
} catch (err) {
  console.error(`error: ${(err as ServiceError).details ?? (err as Error).message}`);
  process.exitCode = 1;
} finally {
  client.close();
}
