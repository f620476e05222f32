// Method paths ("/package.Service/Method") as the generated service
// definition spells them, so that no name of the service is written twice.
import { ModelCacheServiceService } from "../../generated/modelcache/v1/model_cache.js";

/** A method of a generated service definition: what a handler is keyed by. */
export interface MethodDefinition {
  path: string;
}

/** "modelcache.v1.ModelCacheService" from "/modelcache.v1.ModelCacheService/GetModel". */
export function serviceOf(path: string): string {
  return path.slice(1, path.lastIndexOf("/"));
}

/** "GetModel" from "/modelcache.v1.ModelCacheService/GetModel". */
export function methodOf(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

/** The full name of ModelCacheService, as health checks and metrics name it. */
export const MODEL_CACHE_SERVICE = serviceOf(ModelCacheServiceService.getModel.path);
