// Which model a hub request for repository R at revision V is answered
// from: the model whose source is R and whose revision is V or whose
// install's (or pull's) resolved commit is V; failing that, for `main` or
// `HEAD`, the one model with source R. Only hub sources are served (never
// s3:// ones). A
// model not installed (or unhealthy) is resolved as ResolveModel resolves it
// with the model's own policy: NEVER answers that it is not installed, the
// others pull it (or join its pull) and answer once it is installed. An
// installed ALWAYS model is checked against its source at most once a minute.
import { join } from "node:path";
import { MANIFEST_FILE } from "../cache/layout.js";
import type { Manifest } from "../cache/manifest.js";
import { readManifest } from "../cache/read-manifest.js";
import { resolveModel } from "../consumers/resolve-model.js";
import { ModelCacheError, quote } from "../errors.js";
import { listModels } from "../registry/list-models.js";
import type { ModelRecord } from "../registry/model-record.js";
import type { Runtime } from "../runtime.js";
import { hubNotFound, pullThroughError } from "./hub-errors.js";

/** A file as the listing routes show it: from an install's manifest, or from the listing of a pull under way. */
export interface ListedFile {
  path: string;
  sizeBytes: number;
  /** known for every installed file; for a file being pulled, when the source lists it (a hub's LFS files) */
  sha256?: string;
  /** the git blob id, when the source listed one (a hub's other files) */
  gitBlobId?: string;
}

/** What the listing routes answer from: an install, or the listing of the pull that is installing it. */
export interface ListedModel {
  record: ModelRecord;
  /** the commit served: the install's (or the pull's) resolved commit, else the model's revision (a local-directory install) */
  commit: string;
  /** sorted by path */
  files: readonly ListedFile[];
  /** when the install was made (or the listing taken) */
  atMs: number;
}

export interface ServedModel extends ListedModel {
  /** the install's directory under the cache root */
  dir: string;
  manifest: Manifest;
}

/** An ALWAYS model's source is asked for its revision at most this often, whatever the number of requests. */
export const ALWAYS_RECHECK_MS = 60_000;
/** per server, when each ALWAYS model's source was last asked */
const lastAsked = new WeakMap<Runtime, Map<string, number>>();

/**
 * The model a request for `repo` at `revision` is served from, installed
 * first when its policy says so; a 404 error with the hub's X-Error-Code
 * otherwise. `caller` is named as the holder, as ResolveModel's is.
 */
export async function findServedModel(runtime: Runtime, repo: string, revision: string, caller: string, signal: AbortSignal): Promise<ServedModel> {
  let record = await chooseModel(runtime, repo, revision);
  // taken first: installing an ALWAYS model asks its source too
  const due = dueForRecheck(runtime, record);
  if (!isInstalled(record) || due) record = await install(runtime, record, caller, signal);
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
  return { record, dir, manifest, files: manifest.files, atMs: manifest.installedAtMs, commit: manifest.resolvedCommit || record.install?.resolvedCommit || record.revision };
}

export function isInstalled(record: ModelRecord): boolean {
  return record.install !== undefined && record.status === "installed";
}

/** The model of `repo` a request for `revision` names (installed or not); RepoNotFound or RevisionNotFound otherwise. */
export async function chooseModel(runtime: Runtime, repo: string, revision: string): Promise<ModelRecord> {
  const ofRepo = (await listModels(runtime.registry)).filter((model) => model.source === repo && !repo.startsWith("s3://"));
  if (ofRepo.length === 0) throw hubNotFound("RepoNotFound", `repository ${quote(repo)} is not served here: no model registered on this modelcache has it as its source`);
  // by name, by the installed commit, or by the commit of a pull under way (a client asks by the commit it was told)
  const named = ofRepo.filter(
    (model) => model.revision === revision || (model.install !== undefined && model.install.resolvedCommit === revision) || runtime.pulls.find(model.name)?.source.resolvedCommit === revision,
  );
  // an installed match first: two models may name one revision, with different filters
  const chosen = named.find((model) => model.install !== undefined) ?? named[0] ?? ((revision === "main" || revision === "HEAD") && ofRepo.length === 1 ? ofRepo[0] : undefined);
  if (!chosen) {
    throw hubNotFound("RevisionNotFound", `revision ${quote(revision)} of ${quote(repo)} is not served here: the models of this repository have revisions ${ofRepo.map((m) => quote(m.revision)).join(", ")}`);
  }
  return runtime.uses.overlay(chosen);
}

/**
 * Whether an installed ALWAYS model's source is to be asked now; if so, the
 * time is taken at once, so requests meanwhile are served from the install
 * and do not ask again.
 */
export function dueForRecheck(runtime: Runtime, record: ModelRecord): boolean {
  if (record.pullPolicy !== "always") return false;
  let asked = lastAsked.get(runtime);
  if (!asked) lastAsked.set(runtime, (asked = new Map()));
  const at = asked.get(record.name);
  if (at !== undefined && Date.now() - at < ALWAYS_RECHECK_MS) return false;
  asked.set(record.name, Date.now());
  return true;
}

/**
 * Resolves a model that has no healthy install (or an ALWAYS model due for a
 * check) as ResolveModel does with the model's policy (no lease: each file
 * is opened before it is sent, and an open file outlives its install), and
 * reads its record again.
 */
async function install(runtime: Runtime, record: ModelRecord, caller: string, signal: AbortSignal): Promise<ModelRecord> {
  const notInstalled = `model '${record.name}' (${quote(record.source)} at ${quote(record.revision)}) is not installed on this modelcache`;
  if (record.pullPolicy === "never") throw hubNotFound("EntryNotFound", `${notInstalled} and its pull policy is NEVER: pull it first (modelcache pull ${record.name})`);
  try {
    await resolveModel(runtime, { name: record.name, pullPolicy: undefined, credentialAlias: "", leaseSeconds: 0, holder: caller }, signal);
  } catch (err) {
    // NEVER set meanwhile, or the model unregistered: the hub's words for it
    if (err instanceof ModelCacheError && (err.kind === "failed_precondition" || err.kind === "not_found")) throw hubNotFound("EntryNotFound", `${notInstalled}: ${err.message}`);
    throw pullThroughError(record.name, err);
  }
  const installed = await runtime.registry.models.get(record.name);
  if (!installed?.install || installed.unregistering) throw hubNotFound("EntryNotFound", `${notInstalled}: it went again while it was being installed; ask again`);
  return runtime.uses.overlay(installed);
}
