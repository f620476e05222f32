// ResolveModel: the one call a service that uses a model makes: a healthy
// install's path, pulled first when the pull policy says so. The policies
// mean what Kubernetes' imagePullPolicy means: NEVER only looks, IF_MISSING
// pulls what is not there (or not healthy), ALWAYS asks the source which
// commit the revision names now and pulls unless that commit is installed.
// A pull this needs is the model's shared pull job, so concurrent callers
// (and Pull callers) share one download.
import { inspectInstall, type InstallReport } from "../cache/inspect-install.js";
import type { Manifest } from "../cache/manifest.js";
import { lstat } from "node:fs/promises";
import { join } from "node:path";
import { MANIFEST_FILE } from "../cache/layout.js";
import { ModelCacheError, errorCode, filesystemError } from "../errors.js";
import { reconcileModel } from "../lifecycle/reconcile-registry.js";
import { healthyNow, withRecordedCorruption } from "../lifecycle/inspect-cache.js";
import { currentCommit } from "../pull/current-commit.js";
import { originDirectory } from "../pull/origin-directory.js";
import { pullModel } from "../pull/pull-model.js";
import { NEVER_ABORTED } from "../concurrency/never-aborted.js";
import { getModel, getModelNow } from "../registry/get-model.js";
import type { ModelRecord, PullPolicy } from "../registry/model-record.js";
import type { Runtime } from "../runtime.js";
import { type Lease, droppedWhileResolving } from "./leases.js";

export interface ResolveModelRequest {
  name: string;
  /** undefined: the model's own policy */
  pullPolicy: PullPolicy | undefined;
  /** "" to use the model's own alias */
  credentialAlias: string;
  /** 0: no lease; more than --max-lease-seconds is shortened to it */
  leaseSeconds: number;
  /** who asks, recorded with a lease: the caller's token name, else its peer address */
  holder: string;
}

export interface ResolvedModel {
  name: string;
  cacheDir: string;
  manifest: Manifest;
  /** this call installed or replaced the install */
  pulled: boolean;
  /** the install is known to match the source's revision now */
  revalidated: boolean;
  /** this call asked the model's source (with its credential) which commit the revision names */
  askedSource?: boolean;
  lease?: Lease;
}

const COMMIT = /^[0-9a-f]{40}$/;

export const POLICY_LABELS: Record<PullPolicy, string> = { never: "PULL_POLICY_NEVER", if_missing: "PULL_POLICY_IF_MISSING", always: "PULL_POLICY_ALWAYS" };

/**
 * `signal` may be given as a function that makes it: a resolve answered from
 * the install waits on nothing a cancel could stop, and never asks for it
 * (a gRPC call's signal costs a few microseconds to make, a tenth of such a call).
 */
export async function resolveModel(runtime: Runtime, request: ResolveModelRequest, signal: AbortSignal | (() => AbortSignal)): Promise<ResolvedModel> {
  const removalsBefore = runtime.leases.removalMark();
  const resolved = installedNow(runtime, request) ?? (await resolveFully(runtime, request, typeof signal === "function" ? signal : () => signal));
  if (request.leaseSeconds <= 0) return resolved;
  // the grant is refused while a removal (DropCache, an eviction,
  // UnregisterModel) is under way, and from the grant on, every removal but a
  // forced one is refused; one that ended between the look at the install and
  // the grant took the install away, so only when one came is the disk asked
  // again
  const lease = await runtime.leases.grant(resolved.name, request.leaseSeconds, request.holder);
  if (runtime.leases.removalMark() !== removalsBefore && !(await stillInstalled(join(resolved.cacheDir, MANIFEST_FILE)))) {
    await runtime.leases.release(lease.id);
    throw droppedWhileResolving(resolved.name);
  }
  return { ...resolved, lease };
}

async function resolveFully(runtime: Runtime, request: ResolveModelRequest, signalOf: () => AbortSignal): Promise<ResolvedModel> {
  const model = await getModel(runtime.registry, request.name);
  const resolved = await resolveInstall(runtime, model, request.pullPolicy ?? model.pullPolicy, request.credentialAlias, signalOf);
  runtime.uses.record(model.name);
  return resolved;
}

/**
 * ResolveModel answered without waiting on anything, when it asks for no
 * lease (a lease waits for its write) and the install is answered now (see
 * installedNow). Undefined otherwise; resolveModel answers then.
 */
export function resolveModelNow(runtime: Runtime, request: ResolveModelRequest): ResolvedModel | undefined {
  return request.leaseSeconds > 0 ? undefined : installedNow(runtime, request);
}

/**
 * The install as the answer, found without waiting on anything: the record
 * read at once, the install healthy and recorded so, and a policy that takes
 * it as it is (NEVER, IF_MISSING, or ALWAYS with the pinned commit
 * installed). Undefined otherwise: the full path looks.
 */
function installedNow(runtime: Runtime, request: ResolveModelRequest): ResolvedModel | undefined {
  const model = getModelNow(runtime.registry, request.name);
  const report = model && healthyNow(runtime, model);
  if (!model || !report) return undefined;
  const answer = takenAsIs(model, request.pullPolicy ?? model.pullPolicy, report);
  if (answer) runtime.uses.record(model.name);
  return answer;
}

/**
 * The healthy install in `report` as the answer, when `policy` takes it as
 * it is, without pulling or asking the source: NEVER and IF_MISSING, or
 * ALWAYS with the commit the model pins installed (known to match without
 * asking anyone).
 */
function takenAsIs(model: ModelRecord, policy: PullPolicy, report: InstallReport): ResolvedModel | undefined {
  const installed = installedAnswer(model, report);
  if (!installed) return undefined;
  const pinnedMatch = COMMIT.test(model.revision) && installed.manifest.resolvedCommit === model.revision;
  if (policy === "always" && !pinnedMatch) return undefined;
  return { ...installed, revalidated: pinnedMatch };
}

/** The healthy install in `report` as an answer that pulled nothing; undefined when it is not healthy. */
function installedAnswer(model: ModelRecord, report: InstallReport): Omit<ResolvedModel, "revalidated"> | undefined {
  return report.status === "installed" ? { name: model.name, cacheDir: report.cacheDir, manifest: report.manifest!, pulled: false } : undefined;
}

async function resolveInstall(runtime: Runtime, model: ModelRecord, policy: PullPolicy, credentialAlias: string, signalOf: () => AbortSignal): Promise<ResolvedModel> {
  const report = await inspect(runtime, model);
  const asIs = takenAsIs(model, policy, report);
  if (asIs) return asIs;
  if (policy === "never") {
    throw new ModelCacheError(
      "failed_precondition",
      `model '${model.name}' has no healthy install (${report.status}${report.detail ? `: ${report.detail}` : ""}) and the pull policy is PULL_POLICY_NEVER, which never pulls: pull it first (Pull or 'modelcache pull ${model.name}'), or resolve with PULL_POLICY_IF_MISSING`,
    );
  }
  if (policy === "if_missing") return pull(runtime, model, credentialAlias, signalOf());

  // ALWAYS, without the pinned commit installed: the source says which commit the revision names now
  const installed = installedAnswer(model, report);
  const signal = signalOf();
  try {
    // an install from a directory is checked against that directory (by pulling it), never its hub
    const current = model.sourceDir !== undefined ? undefined : await currentCommit(runtime, model, credentialAlias, signal);
    if (installed && current !== undefined && installed.manifest.resolvedCommit === current) return { ...installed, revalidated: true, askedSource: true };
    return await pull(runtime, model, credentialAlias, signal);
  } catch (err) {
    // the source cannot be reached: the install there serves, marked as not rechecked
    if (installed && unreachable(err) && !signal.aborted) return { ...installed, revalidated: false, askedSource: true };
    throw err;
  }
}

/** The shallow check, recorded in the registry as InspectCache records it. */
async function inspect(runtime: Runtime, model: ModelRecord): Promise<InstallReport> {
  // a shallow check reads no content: nothing in it to cancel
  const report = withRecordedCorruption(model, await inspectInstall(runtime.layout, model.name, false, NEVER_ABORTED));
  await reconcileModel(runtime, model, report);
  return report;
}

/**
 * Joins the model's pull under way, or pulls from where the install came
 * from: the directory it was installed from, else the model's source.
 */
async function pull(runtime: Runtime, model: ModelRecord, credentialAlias: string, signal: AbortSignal): Promise<ResolvedModel> {
  const fixtureDir = runtime.pulls.find(model.name) ? "" : ((await originDirectory(runtime, model)) ?? "");
  let completed: { cacheDir: string; manifest: Manifest } | undefined;
  for await (const event of pullModel(runtime, { name: model.name, fixtureDir, credentialAlias, force: false, detach: false }, signal)) {
    if (event.type === "completed") completed = event;
  }
  if (!completed) throw new ModelCacheError("internal", `the pull of model '${model.name}' ended without installing it`);
  return { name: model.name, cacheDir: completed.cacheDir, manifest: completed.manifest, pulled: true, revalidated: true };
}

/** Whether the install's manifest is still there (a drop removes the whole directory). */
async function stillInstalled(manifest: string): Promise<boolean> {
  try {
    await lstat(manifest);
    return true;
  } catch (err) {
    // the install is gone; any other failure to look is an error of its own
    if (errorCode(err) === "ENOENT") return false;
    throw filesystemError("read", manifest, err);
  }
}

function unreachable(err: unknown): boolean {
  return err instanceof ModelCacheError && err.kind === "unavailable";
}
