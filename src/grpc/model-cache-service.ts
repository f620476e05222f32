// ModelCacheService: each RPC decodes its request, calls one domain
// operation and encodes the result. Nothing else happens here.
import { NEVER_ABORTED } from "../concurrency/never-aborted.js";
import { describeCache } from "../lifecycle/describe-cache.js";
import { pruneCache } from "../maintenance/prune-cache.js";
import { dropCache } from "../lifecycle/drop-cache.js";
import { inspectCache, inspectCacheNow } from "../lifecycle/inspect-cache.js";
import { unregisterModel } from "../lifecycle/unregister-model.js";
import { pullModel } from "../pull/pull-model.js";
import { getModel } from "../registry/get-model.js";
import { listModels } from "../registry/list-models.js";
import { registerModel } from "../registry/register-model.js";
import { deleteSecret, putSecret } from "../registry/secrets.js";
import { updateModel } from "../registry/update-model.js";
import type { ModelRecord } from "../registry/model-record.js";
import { managedByFile, ownedByFile } from "../models-file/plan-changes.js";
import type { Runtime } from "../runtime.js";
import { applyModels } from "../models-file/apply-models.js";
import { type ResolvedModel, resolveModel, resolveModelNow } from "../consumers/resolve-model.js";
import { releaseLease } from "../consumers/release-lease.js";
import { listLeases } from "../consumers/list-leases.js";
import { validateSpecs } from "../models-file/validate-specs.js";
import { InspectCacheResponse, ModelCacheServiceService as Service, ModelStatus, type ModelCacheServiceServer, type PullResponse, ResolveModelResponse } from "../../generated/modelcache/v1/model_cache.js";
import { type CallContext, type UnaryCall, serverStream, unary } from "./adapt-call.js";
import { changeToProto, modelToProto, pullEventToProto, pullPolicyFromProto, specFromProto } from "./convert.js";
import { inspectResponse, resolveResponse, serializeWithManifest } from "./manifest-wire.js";

/** The generated service definition, with the responses that carry a manifest encoding it once per manifest. */
export const modelCacheServiceDefinition = {
  ...Service,
  inspectCache: { ...Service.inspectCache, responseSerialize: serializeWithManifest(InspectCacheResponse, 4) },
  resolveModel: { ...Service.resolveModel, responseSerialize: serializeWithManifest(ResolveModelResponse, 3) },
};

/** ResolveModel's response; one answered from the install as it was, without asking its source, is a read (not audited). */
function resolveAnswer(resolved: ResolvedModel, call: UnaryCall): ResolveModelResponse {
  // nothing pulled, leased or fetched with the model's credential
  if (!resolved.pulled && !resolved.lease && !resolved.askedSource) call.changedNothing();
  return resolveResponse(resolved);
}

/** A check that refuses an RPC change to a model the models file manages. */
function refuseIfManaged(runtime: Runtime, what: string): (current: ModelRecord) => void {
  return (current) => {
    if (ownedByFile(current, runtime.modelsFile)) throw managedByFile(current.name, runtime.modelsFile, what);
  };
}

export function modelCacheService(runtime: Runtime, context: CallContext): ModelCacheServiceServer {
  const { registry } = runtime;
  const withLeases = (record: ModelRecord) => modelToProto(runtime.uses.overlay(record), runtime.leases.count(record.name));
  return {
    registerModel: unary(context, Service.registerModel, async (request) => ({
      model: withLeases(await registerModel(registry, specFromProto(request.model))),
    })),
    updateModel: unary(context, Service.updateModel, async (request) => ({
      model: withLeases(await updateModel(registry, request.name, specFromProto(request.model), { check: refuseIfManaged(runtime, "UpdateModel would replace its spec"), ifUpdatedAtMs: request.ifUpdatedAt?.getTime() })),
    })),
    getModel: unary(context, Service.getModel, async (request) => ({
      model: withLeases(await getModel(registry, request.name)),
    })),
    listModels: unary(context, Service.listModels, async () => ({
      models: (await listModels(registry)).map(withLeases),
    })),
    unregisterModel: unary(context, Service.unregisterModel, async (request, call) => ({
      removed: await unregisterModel(runtime, request.name, request.dropCache, call.signal, refuseIfManaged(runtime, "UnregisterModel would remove it, and the file would register it again")),
    })),
    pull: serverStream(context, Service.pull, async function* (request, signal): AsyncGenerator<PullResponse> {
      for await (const event of pullModel(runtime, request, signal)) yield pullEventToProto(request.name, event);
    }),
    inspectCache: unary(context, Service.inspectCache, (request, call) => {
      // a healthy install whose record says so is answered at once
      const now = request.deep ? undefined : inspectCacheNow(runtime, request.name);
      if (now) return inspectResponse(request.name, now);
      // a shallow inspection waits on nothing a cancel could stop (a lookup, or a few stat calls)
      return inspectCache(runtime, request.name, request.deep, request.deep ? call.signal : NEVER_ABORTED).then((report) => inspectResponse(request.name, report));
    }),
    dropCache: unary(context, Service.dropCache, async (request, call) => {
      const { removed, freedBytes } = await dropCache(runtime, request.name, call.signal, request.force);
      return { name: request.name, removed, status: ModelStatus.MODEL_STATUS_REGISTERED, freedBytes };
    }),
    describeCache: unary(context, Service.describeCache, async () => {
      const described = await describeCache(runtime);
      return {
        ...described,
        maxBytes: runtime.capacity.settings.maxBytes,
        models: described.models.map((m) => ({ name: m.name, sizeBytes: m.sizeBytes, exclusiveBytes: m.exclusiveBytes, lastUsedAt: new Date(m.lastUsedAtMs), pinned: m.pinned, leases: runtime.leases.count(m.name) })),
      };
    }),
    pruneCache: unary(context, Service.pruneCache, async (request) => {
      const { freedBytes, blobsRemoved, partialsRemoved, dryRun, strays, skipped } = await pruneCache(runtime, request.dryRun);
      if (skipped.length > 0) context.logger.info({ skipped }, `PruneCache skipped the leftovers of ${skipped.map((n) => `'${n}'`).join(", ")}: a pull or drop holds ${skipped.length === 1 ? "its" : "their"} lock; prune again once it ends`);
      if (strays.length > 0) context.logger.warn({ strays }, "the content store holds names that are not sha256 digests: left alone, remove them by hand once checked");
      return { freedBytes, blobsRemoved, partialsRemoved, dryRun };
    }),
    putSecret: unary(context, Service.putSecret, async (request) => {
      await putSecret(registry, request.alias, request.value);
      return {};
    }),
    deleteSecret: unary(context, Service.deleteSecret, async (request) => ({
      removed: await deleteSecret(registry, request.alias),
    })),
    applyModels: unary(context, Service.applyModels, async (request, call) => {
      const specs = validateSpecs(request.models.map(specFromProto));
      const scope = { by: "rpc", prune: request.prune, modelsFile: runtime.modelsFile } as const;
      const changes = await applyModels(runtime, specs, { scope, dryRun: request.dryRun, signal: call.signal });
      return { changes: changes.map(changeToProto) };
    }),
    resolveModel: unary(context, Service.resolveModel, (request, call) => {
      const pullPolicy = pullPolicyFromProto(request.pullPolicy, "pull_policy");
      // the holder is recorded with a lease only
      const holder = request.leaseSeconds > 0 ? call.caller.replace(/^peer /, "") : "";
      const asked = { name: request.name, pullPolicy, credentialAlias: request.credentialAlias, leaseSeconds: request.leaseSeconds, holder };
      // a healthy install whose record says so, no lease asked for: answered at once
      const now = resolveModelNow(runtime, asked);
      return now ? resolveAnswer(now, call) : resolveModel(runtime, asked, () => call.signal).then((resolved) => resolveAnswer(resolved, call));
    }),
    releaseLease: unary(context, Service.releaseLease, async (request) => ({ released: await releaseLease(runtime, request.leaseId) })),
    listLeases: unary(context, Service.listLeases, async (request) => ({
      leases: (await listLeases(runtime, request.name)).map((l) => ({ leaseId: l.id, name: l.name, expiresAt: new Date(l.expiresAtMs), holder: l.holder ?? "" })),
    })),
  };
}
