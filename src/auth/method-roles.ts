// Which role may call what. Health needs no token at all; reflection and the
// read-only methods need a reader; resolving a model under a lease and
// releasing it need a consumer; everything else (what changes the registry,
// the secrets or the cache by hand) needs an admin. Each role may also call
// everything the roles below it may.
import type { Role } from "./access-tokens.js";
import { ModelCacheServiceService as Service } from "../../generated/modelcache/v1/model_cache.js";

const OPEN_SERVICES = new Set(["grpc.health.v1.Health"]);
const READER_SERVICES = new Set(["grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"]);
const READER_METHODS: ReadonlySet<string> = new Set([Service.getModel, Service.listModels, Service.inspectCache, Service.describeCache, Service.listLeases].map((method) => method.path));
/** what a service that uses models needs: its install, pulled when its policy says so, under a lease it ends */
const CONSUMER_METHODS: ReadonlySet<string> = new Set([Service.resolveModel, Service.releaseLease].map((method) => method.path));

/** each role with what it may do beyond the roles before it */
const RANK: Record<Role, number> = { reader: 0, consumer: 1, admin: 2 };

/** each path asked about, with its answer: the guard asks on every call, and the methods are few */
const required = new Map<string, Role | "none">();
/** bounds the memo: a client may send any path, and an unknown one is refused (UNIMPLEMENTED) after the guard */
const MOST_REMEMBERED = 256;

/** The least role that may call `path` (/package.Service/Method), or "none" when any caller may. */
export function requiredRole(path: string): Role | "none" {
  let role = required.get(path);
  if (role === undefined) {
    role = roleOf(path);
    if (required.size < MOST_REMEMBERED) required.set(path, role);
  }
  return role;
}

function roleOf(path: string): Role | "none" {
  const service = path.split("/")[1] ?? "";
  if (OPEN_SERVICES.has(service)) return "none";
  if (READER_SERVICES.has(service) || READER_METHODS.has(path)) return "reader";
  if (CONSUMER_METHODS.has(path)) return "consumer";
  return "admin";
}

export function allows(role: Role, required: Role | "none"): boolean {
  return required === "none" || RANK[role] >= RANK[required];
}

/** Paths of the methods that change the registry, the vault or the cache: each call gets an audit line. */
export const MUTATING_METHODS: ReadonlySet<string> = new Set(
  [Service.registerModel, Service.updateModel, Service.unregisterModel, Service.pull, Service.dropCache, Service.pruneCache, Service.putSecret, Service.deleteSecret, Service.applyModels, Service.resolveModel, Service.releaseLease].map((method) => method.path),
);
