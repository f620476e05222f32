// InspectCacheResponse on the wire. An install's manifest is the bulk of the
// response and the same object from one inspection to the next (while
// manifest.json is unchanged), so its proto form and its encoding are kept
// beside it instead of being rebuilt for every call.
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import type { InstallReport } from "../cache/inspect-install.js";
import type { Manifest as ManifestRecord } from "../cache/manifest.js";
import { InspectCacheResponse, Manifest } from "../../generated/modelcache/v1/model_cache.js";
import { manifestToProto, reportToProto } from "./convert.js";

const protos = new WeakMap<ManifestRecord, Manifest>();
const encodings = new WeakMap<Manifest, Uint8Array>();

export function inspectResponse(name: string, report: InstallReport): InspectCacheResponse {
  const response = reportToProto(name, { ...report, manifest: undefined });
  if (report.manifest) {
    let manifest = protos.get(report.manifest);
    if (!manifest) protos.set(report.manifest, (manifest = manifestToProto(report.manifest)));
    response.manifest = manifest;
  }
  return response;
}

/** InspectCacheResponse.encode, with the manifest's bytes encoded once per manifest. */
export function serializeInspectResponse(response: InspectCacheResponse): Buffer {
  const writer = InspectCacheResponse.encode({ ...response, manifest: undefined }, new BinaryWriter());
  if (response.manifest) {
    let bytes = encodings.get(response.manifest);
    if (!bytes) encodings.set(response.manifest, (bytes = Manifest.encode(response.manifest).finish()));
    // field 4, length-delimited: what Manifest.encode(..., writer.uint32(34).fork()).join() writes
    writer.uint32(34).bytes(bytes);
  }
  const bytes = writer.finish();
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
