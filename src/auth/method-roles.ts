// Which role may call what. Health needs no token at all; reflection and the
// read-only methods need a reader; everything else needs an admin.
import type { Role } from "./access-tokens.js";

const OPEN_SERVICES = new Set(["grpc.health.v1.Health"]);
const READER_SERVICES = new Set(["grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"]);
const READER_METHODS = new Set(["/modelcache.v1.ModelCacheService/GetModel", "/modelcache.v1.ModelCacheService/ListModels", "/modelcache.v1.ModelCacheService/InspectCache"]);

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

/** Methods that change the registry, the vault or the cache: each call gets an audit line. */
export const MUTATING_METHODS = new Set(["RegisterModel", "UpdateModel", "UnregisterModel", "Pull", "DropCache", "PutSecret", "DeleteSecret"]);
