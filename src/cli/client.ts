// What the client commands share: the connection to a running server
// (--address, MODELCACHE_ADDRESS), promise-shaped calls, and the exit codes
// scripts branch on.
import { Metadata, type ServiceError, credentials, status } from "@grpc/grpc-js";
import { ModelCacheServiceClient, type ModelCacheServiceService } from "../../generated/modelcache/v1/model_cache.js";

export const EXIT = { ok: 0, failure: 1, usage: 2, notFound: 3, unhealthy: 4, missing: 5, interrupted: 130 } as const;

export function connect(address: string): ModelCacheServiceClient {
  return new ModelCacheServiceClient(address, credentials.createInsecure());
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

/** Prints a failed call's message and a hint, no stack, and returns the exit code. */
export function reportError(err: unknown, address: string): number {
  const service = err as Partial<ServiceError>;
  if (typeof service.code !== "number") {
    process.stderr.write(`error: ${(err as Error).message ?? String(err)}\n`);
    return EXIT.failure;
  }
  process.stderr.write(`error: ${service.details || status[service.code]}\n`);
  if (service.code === status.UNAVAILABLE) process.stderr.write(`hint: is a server running at ${address}? start one with 'modelcache serve', or set --address / MODELCACHE_ADDRESS\n`);
  if (service.code === status.NOT_FOUND) process.stderr.write("hint: 'modelcache models list' shows the registered models\n");
  return service.code === status.NOT_FOUND ? EXIT.notFound : service.code === status.CANCELLED ? EXIT.interrupted : EXIT.failure;
}
