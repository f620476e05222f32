// Which role may call what. Health needs no token at all; reflection and the
// read-only methods need a reader; everything else needs an admin.
import type { Role } from "./access-tokens.js";
import { ModelCacheServiceService as Service } from "../../generated/modelcache/v1/model_cache.js";

const OPEN_SERVICES = new Set(["grpc.health.v1.Health"]);
const READER_SERVICES = new Set(["grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"]);
const READER_METHODS: ReadonlySet<string> = new Set([Service.getModel, Service.listModels, Service.inspectCache, Service.describeCache, Service.listLeases].map((method) => method.path));

/** The least role that may call `path` (/package.Service/Method), or "none" when any caller may. */
export function requiredRole(path: string): Role | "none" {
  const service = path.split("/")[1] ?? "";
  if (OPEN_SERVICES.has(service)) return "none";
  if (READER_SERVICES.has(service) || READER_METHODS.has(path)) return "reader";
  return "admin";
}

export function allows(role: Role, required: Role | "none"): boolean {
  return required === "none" || required === "reader" || role === "admin";
}

/** Paths of the methods that change the registry, the vault or the cache: each call gets an audit line. */
export const MUTATING_METHODS: ReadonlySet<string> = new Set(
  [Service.registerModel, Service.updateModel, Service.unregisterModel, Service.pull, Service.dropCache, Service.pruneCache, Service.putSecret, Service.deleteSecret, Service.applyModels, Service.resolveModel, Service.releaseLease].map((method) => method.path),
);
