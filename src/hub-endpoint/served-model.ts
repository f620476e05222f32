// Which installed model a hub request for repository R at revision V is
// answered from: the model whose source is R and whose revision is V or whose
// install's resolved commit is V; failing that, for `main` or `HEAD`, the one
// model with source R. Only hub sources are served (never s3:// ones).
import { join } from "node:path";
import { MANIFEST_FILE } from "../cache/layout.js";
import type { Manifest } from "../cache/manifest.js";
import { readManifest } from "../cache/read-manifest.js";
import { quote } from "../errors.js";
import { listModels } from "../registry/list-models.js";
import type { ModelRecord } from "../registry/model-record.js";
import type { Runtime } from "../runtime.js";
import { hubNotFound } from "./hub-errors.js";

export interface ServedModel {
  record: ModelRecord;
  /** the install's directory under the cache root */
  dir: string;
  manifest: Manifest;
  /** the commit served: the install's resolved commit, else the model's revision (a local-directory install) */
  commit: string;
}

/** The model a request for `repo` at `revision` is served from; a 404 error with the hub's X-Error-Code otherwise. */
export async function findServedModel(runtime: Runtime, repo: string, revision: string): Promise<ServedModel> {
  const ofRepo = (await listModels(runtime.registry)).filter((model) => model.source === repo && !repo.startsWith("s3://"));
  if (ofRepo.length === 0) throw hubNotFound("RepoNotFound", `repository ${quote(repo)} is not served here: no model registered on this modelcache has it as its source`);
  const named = ofRepo.filter((model) => model.revision === revision || (model.install !== undefined && model.install.resolvedCommit === revision));
  // an installed match first: two models may name one revision, with different filters
  const chosen = named.find((model) => model.install !== undefined) ?? named[0] ?? ((revision === "main" || revision === "HEAD") && ofRepo.length === 1 ? ofRepo[0] : undefined);
  if (!chosen) {
    throw hubNotFound("RevisionNotFound", `revision ${quote(revision)} of ${quote(repo)} is not served here: the models of this repository have revisions ${ofRepo.map((m) => quote(m.revision)).join(", ")}`);
  }
  const record = runtime.uses.overlay(chosen);
  if (!record.install || record.status !== "installed") {
    throw hubNotFound("EntryNotFound", `model '${record.name}' (${quote(repo)} at ${quote(record.revision)}) is not installed on this modelcache: pull it first (modelcache pull ${record.name})`);
  }
  // never the record's path as stored: the layout builds it from the checked name, inside the cache root
  const dir = runtime.layout.modelDir(record.name);
  let manifest: Manifest;
  try {
    manifest = readManifest(join(dir, MANIFEST_FILE));
  } catch (err) {
    // dropped or evicted since the registry was read: as not installed
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    throw hubNotFound("EntryNotFound", `model '${record.name}' (${quote(repo)}) is no longer installed on this modelcache: pull it again`);
  }
  return { record, dir, manifest, commit: manifest.resolvedCommit || record.install.resolvedCommit || record.revision };
}
