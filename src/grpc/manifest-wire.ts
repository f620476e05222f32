// Responses that carry an install's manifest (InspectCache, ResolveModel) on
// the wire. The manifest is the bulk of such a response and the same object
// from one call to the next (while manifest.json is unchanged), so its proto
// form and its encoding are kept beside it instead of being rebuilt per call;
// a whole response that repeats (an unchanged install's InspectCache, a
// ResolveModel without a lease) is made and encoded once.
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import type { InstallReport } from "../cache/inspect-install.js";
import type { Manifest as ManifestRecord } from "../cache/manifest.js";
import { InspectCacheResponse, Manifest, ResolveModelResponse } from "../../generated/modelcache/v1/model_cache.js";
import type { ResolvedModel } from "../consumers/resolve-model.js";
import { manifestToProto, reportToProto } from "./convert.js";

const protos = new WeakMap<ManifestRecord, Manifest>();
const encodings = new WeakMap<Manifest, Uint8Array>();
/** the response to each shared (frozen) report: inspect-install.ts hands out the same report while its install is unchanged */
const inspectResponses = new WeakMap<InstallReport, InspectCacheResponse>();
/** ResolveModel's responses without a lease, by manifest and answer */
const resolveResponses = new WeakMap<ManifestRecord, ResolveModelResponse[]>();
/** the responses made for shared reports (frozen), and the encoding of each once it was encoded */
const sharedResponses = new WeakSet<object>();
const responseEncodings = new WeakMap<object, Buffer>();
/**
 * Responses that are a shared response with a few fields more (a leased
 * ResolveModel): the shared one, and a message of those fields alone.
 * Protobuf merges concatenated messages, so such a response is encoded as
 * the shared response's bytes (made once) followed by those fields'.
 */
const extensions = new WeakMap<object, { base: object; extra: object }>();
const EMPTY_RESOLVE_RESPONSE = Object.freeze(ResolveModelResponse.create());

/** The manifest's proto form, built once per parsed manifest. */
export function manifestProto(record: ManifestRecord): Manifest {
  let manifest = protos.get(record);
  if (!manifest) protos.set(record, (manifest = manifestToProto(record)));
  return manifest;
}

export function inspectResponse(name: string, report: InstallReport): InspectCacheResponse {
  const known = inspectResponses.get(report);
  if (known) return known;
  const response = reportToProto(name, { ...report, manifest: undefined });
  if (report.manifest) response.manifest = manifestProto(report.manifest);
  if (Object.isFrozen(report)) {
    inspectResponses.set(report, Object.freeze(response));
    sharedResponses.add(response);
  }
  return response;
}

/**
 * The ResolveModel response: one without a lease is the same for every call
 * answered from the same install (the same parsed manifest), so it is made,
 * and encoded, once per manifest and answer.
 */
export function resolveResponse(resolved: ResolvedModel): ResolveModelResponse {
  const shared = sharedResolveResponse(resolved);
  if (!resolved.lease) return shared;
  // the same answer with its lease: encoded as the shared response's bytes followed by the lease's fields
  const lease = { leaseId: resolved.lease.id, leaseExpiresAt: new Date(resolved.lease.expiresAtMs) };
  const response = { ...shared, ...lease };
  extensions.set(response, { base: shared, extra: { ...EMPTY_RESOLVE_RESPONSE, ...lease } });
  return response;
}

/** The response without a lease for the same answer, made once per manifest and answer. */
function sharedResolveResponse(resolved: ResolvedModel): ResolveModelResponse {
  // a manifest is one install's (one name, one directory): what varies is pulled and revalidated
  const answer = (resolved.pulled ? 2 : 0) + (resolved.revalidated ? 1 : 0);
  let byAnswer = resolveResponses.get(resolved.manifest);
  if (!byAnswer) resolveResponses.set(resolved.manifest, (byAnswer = []));
  let response = byAnswer[answer];
  if (!response || response.name !== resolved.name || response.cacheDir !== resolved.cacheDir) {
    response = Object.freeze({ ...resolveFields(resolved), leaseId: "", leaseExpiresAt: undefined });
    sharedResponses.add(response);
    byAnswer[answer] = response;
  }
  return response;
}

function resolveFields(resolved: ResolvedModel) {
  return { name: resolved.name, cacheDir: resolved.cacheDir, manifest: manifestProto(resolved.manifest), pulled: resolved.pulled, revalidated: resolved.revalidated };
}

/**
 * A responseSerialize for a message whose `manifest` is field `field`: the
 * rest is encoded per call, the manifest's bytes once per manifest, a
 * shared response (the same report's) once, and an extended one as its
 * shared response followed by its own fields.
 */
export function serializeWithManifest<T extends { manifest?: Manifest | undefined }>(
  type: { encode(message: T, writer?: BinaryWriter): BinaryWriter },
  field: number,
): (response: T) => Buffer {
  const tag = (field << 3) | 2; // length-delimited
  const serialize = (response: T): Buffer => {
    const known = responseEncodings.get(response);
    if (known) return known;
    const extended = extensions.get(response);
    if (extended) return Buffer.concat([serialize(extended.base as T), encode(extended.extra as T)]);
    const encoded = encode(response);
    // a shared response is encoded once
    if (sharedResponses.has(response)) responseEncodings.set(response, encoded);
    return encoded;
  };
  return serialize;
  function encode(response: T): Buffer {
    const writer = type.encode({ ...response, manifest: undefined }, new BinaryWriter());
    if (response.manifest) {
      let bytes = encodings.get(response.manifest);
      if (!bytes) encodings.set(response.manifest, (bytes = Manifest.encode(response.manifest).finish()));
      writer.uint32(tag).bytes(bytes);
    }
    const bytes = writer.finish();
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
}
