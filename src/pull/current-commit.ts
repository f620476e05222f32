// The commit a model's revision names at its source now, asked without
// pulling: a hub resolves the revision (one request), an OCI registry
// answers one manifest request, an object store is
// listed once (its listing digest is an S3 pull's resolved commit). What
// ResolveModel ALWAYS and the models file's ALWAYS models compare an install
// with, so that an unchanged source is revalidated rather than pulled again.
import { ModelCacheError, quote } from "../errors.js";
import type { ModelRecord } from "../registry/model-record.js";
import type { Runtime } from "../runtime.js";
import { networkOf, resolveCredential } from "./pull-model.js";

const COMMIT = /^[0-9a-f]{40}$/;

/**
 * The commit, or undefined when only a pull can tell (a source directory).
 * Offline, the source cannot be asked: UNAVAILABLE.
 */
export async function currentCommit(runtime: Runtime, model: ModelRecord, credentialAlias: string, signal: AbortSignal): Promise<string | undefined> {
  if (runtime.fixtureDir !== undefined) return undefined;
  const s3 = model.source.startsWith("s3://");
  const oci = model.source.startsWith("oci://");
  if (runtime.hub.offline) {
    const where = s3 ? `its object store (${quote(model.source)})` : oci ? `its registry (${quote(model.source)})` : `the hub for revision '${model.revision}'`;
    throw new ModelCacheError("unavailable", `the server is offline (--offline or HF_HUB_OFFLINE=1): PULL_POLICY_ALWAYS cannot reach ${where} of model '${model.name}', and no install of it is there`);
  }
  if (!s3 && !oci && COMMIT.test(model.revision)) return model.revision;
  const credential = await resolveCredential(runtime, model, credentialAlias);
  const dispatcher = await networkOf(runtime);
  if (oci) {
    // one manifest request (HEAD of the tag); a digest revision is its own answer
    const { resolveOciDigest } = await import("../sources/oci/open-oci-source.js");
    return resolveOciDigest({ source: model.source, revision: model.revision, credential, plainHttp: runtime.ociPlainHttp ?? [], dispatcher, signal });
  }
  if (s3) {
    // the S3 client loads with the first S3 request, not at boot
    const { resolveS3Listing } = await import("../sources/s3/open-s3-source.js");
    return resolveS3Listing({ source: model.source, include: model.include ?? [], exclude: model.exclude ?? [], credential, settings: runtime.s3 ?? { region: "us-east-1" }, dispatcher, signal });
  }
  const { resolveHubRevision } = await import("../sources/hub/open-hub-source.js");
  return resolveHubRevision({ hubUrl: runtime.hub.url, repo: model.source, revision: model.revision, token: credential?.secret, alias: credential?.alias, signal, dispatcher });
}
