// Pull: install a registered model's artifacts from its source, streaming
// events. Checks run in the contract's order: name, registration,
// credential alias, source; the first failure ends the pull. The source is
// the request's fixture_dir, else the server's --fixture-dir, else the hub.
import { resolve } from "node:path";
import { ModelCacheError, quote } from "../errors.js";
import { getModel } from "../registry/get-model.js";
import type { ModelRecord } from "../registry/model-record.js";
import { checkName } from "../registry/names.js";
import { readSecret } from "../registry/secrets.js";
import type { Runtime } from "../runtime.js";
import { inspectInstall } from "../cache/inspect-install.js";
import type { RemoteSourceOptions } from "../sources/artifact-source.js";
import { filterFiles } from "../sources/file-filters.js";
import { openDirectorySource } from "../sources/local-directory.js";
import type { PullEvent } from "./pull-event.js";
import type { PullJob } from "./pull-job.js";
import { checkPullLimits } from "./pull-limits.js";

export interface PullModelRequest {
  name: string;
  /** "" when the request names none */
  fixtureDir: string;
  /** "" to use the model's own alias */
  credentialAlias: string;
  force: boolean;
  detach: boolean;
}

/**
 * The events of the model's pull job: a new one, or the one already queued
 * or running, which this call attaches to. Attaching never changes a pull
 * silently: a fixture_dir other than the job's source is refused, and so is
 * force once the job has begun staging (a queued job is made to force).
 */
export async function* pullModel(runtime: Runtime, request: PullModelRequest, signal: AbortSignal): AsyncGenerator<PullEvent> {
  const model = await getModel(runtime.registry, request.name);
  const credential = await resolveCredential(runtime, model, request.credentialAlias);
  const requestedDir = request.fixtureDir !== "" ? await runtime.fixtureRoots.admit(request.fixtureDir, "fixture_dir") : undefined;
  let job = runtime.pulls.find(model.name);
  if (!job) {
    const dir =
      requestedDir !== undefined
        ? { path: requestedDir, field: "fixture_dir" }
        : runtime.fixtureDir !== undefined
          ? { path: runtime.fixtureDir, field: "the server's --fixture-dir" }
          : undefined;
    if (!dir && runtime.hub.offline) {
      yield* pullOffline(runtime, model, signal);
      return;
    }
    // how every download goes, from a source or a peer: the rate cap, when in ranges, whether around the page cache
    const { bandwidth, parallelRangeMinBytes, parallelRangeBelowBytesPerSecond, directWrites } = runtime.hub;
    const downloads = { bandwidth, parallelRangeMinBytes, parallelRangeBelowBytesPerSecond, directWrites };
    // what every network source takes: where partials go, how downloads go, the way out
    const remote = async (): Promise<RemoteSourceOptions> => ({
      layout: runtime.layout,
      name: model.name,
      ...downloads,
      dispatcher: await networkOf(runtime),
      signal,
    });
    const opened = dir
      ? await openDirectorySource(dir.path, dir.field)
      : model.source.startsWith("oci://")
        ? // the registry client loads with the first OCI pull, not at boot
          await (await import("../sources/oci/open-oci-source.js")).openOciSource({
            ...(await remote()),
            source: model.source,
            revision: model.revision,
            credential,
            plainHttp: runtime.ociPlainHttp ?? [],
            include: model.include ?? [],
            exclude: model.exclude ?? [],
            limits: { ...runtime.pullLimits, check: (files) => checkPullLimits(model.name, files, runtime.pullLimits) },
          })
      : model.source.startsWith("s3://")
        ? // the S3 client loads with the first S3 pull, not at boot
          await (await import("../sources/s3/open-s3-source.js")).openS3Source({
            ...(await remote()),
            source: model.source,
            include: model.include ?? [],
            exclude: model.exclude ?? [],
            credential,
            settings: runtime.s3 ?? { region: "us-east-1" },
          })
        : // the hub client (undici) loads with the first hub pull, not at boot
        await (await import("../sources/hub/open-hub-source.js")).openHubSource({
          ...(await remote()),
          hubUrl: runtime.hub.url,
          repo: model.source,
          revision: model.revision,
          token: credential?.secret,
          alias: credential?.alias,
        });
    // a source with archives filters their entries itself once they are unpacked
    const filtered = "archives" in opened && opened.archives ? opened : { ...opened, files: filterFiles(opened.files, model.include ?? [], model.exclude ?? []) };
    // a network source asks the peers (--peers) first for every file whose sha256 it lists
    const source =
      !dir && "fetch" in filtered && runtime.peers?.list
        ? (await import("../peers/with-peers.js")).withPeers(filtered, { peers: runtime.peers, store: runtime.store, ...downloads })
        : filtered;
    checkPullLimits(model.name, source.files, runtime.pullLimits);
    // another client's request may have started a job while this one was being set up
    job = runtime.pulls.find(model.name) ?? runtime.pulls.start(model, source, request.force);
  }
  checkJoin(job, requestedDir, request.force);
  yield* job.attach(request.detach, signal);
}

/** Refuses to attach a request to a job that is not the pull it asks for. */
function checkJoin(job: PullJob, requestedDir: string | undefined, force: boolean): void {
  const name = job.model.name;
  if (requestedDir !== undefined && job.source.description !== `dir:${resolve(requestedDir)}`) {
    throw new ModelCacheError(
      "failed_precondition",
      `a pull of model '${name}' from ${job.source.description} is already ${job.state}; fixture_dir ${quote(requestedDir)} is another source: wait for that pull to end, or pull without fixture_dir to attach to it`,
    );
  }
  if (force && !job.requireForce()) {
    throw new ModelCacheError(
      "aborted",
      `a pull of model '${name}' is already ${job.state} (from ${job.source.description}); force cannot restart it: attach without force, or wait for it to end`,
    );
  }
}

/** The alias a pull would authenticate with (its own, else the model's) and its secret. */
export async function resolveCredential(runtime: Runtime, model: ModelRecord, requestAlias: string): Promise<{ alias: string; secret: string } | undefined> {
  const field = requestAlias !== "" ? "credential_alias" : "model.credential_alias";
  const alias = requestAlias !== "" ? requestAlias : model.credentialAlias;
  if (alias === "") return undefined;
  checkName(field, alias);
  const secret = await readSecret(runtime.registry, alias);
  if (secret === undefined) {
    throw new ModelCacheError(
      "failed_precondition",
      `credential alias ${quote(alias)} (${field}) has no secret stored: store one under that alias with PutSecret and pull again`,
    );
  }
  return { alias, secret };
}

/**
 * Offline, a hub pull succeeds only when the healthy install already holds
 * the pinned commit (a full sha as revision): its files are reported as they
 * are, and nothing touches the network.
 */
async function* pullOffline(runtime: Runtime, model: ModelRecord, signal: AbortSignal): AsyncGenerator<PullEvent> {
  if (model.source.startsWith("s3://") || model.source.startsWith("oci://")) {
    throw new ModelCacheError(
      "failed_precondition",
      `the server is offline (--offline or HF_HUB_OFFLINE=1) and pulling model '${model.name}' needs its ${model.source.startsWith("oci://") ? "registry" : "object store"} (${quote(model.source)}): start the server without --offline, or set fixture_dir in the PullRequest to install from a local directory`,
    );
  }
  const report = /^[0-9a-f]{40}$/.test(model.revision) ? await inspectInstall(runtime.layout, model.name, false, signal) : undefined;
  const manifest = report?.status === "installed" ? report.manifest : undefined;
  if (!manifest || manifest.resolvedCommit !== model.revision) {
    throw new ModelCacheError(
      "failed_precondition",
      `the server is offline (--offline or HF_HUB_OFFLINE=1) and pulling model '${model.name}' needs the hub: only a healthy install of a pinned commit (a 40-digit sha as revision) can be pulled offline; to install from a local directory, set fixture_dir in the PullRequest or start the server with --fixture-dir DIR`,
    );
  }
  yield { type: "started", source: `hub:${model.source}@${manifest.resolvedCommit}`, fileCount: manifest.files.length, totalBytes: manifest.totalSizeBytes, reusedBytes: manifest.totalSizeBytes, evictedModels: [] };
  for (const [index, file] of manifest.files.entries()) {
    yield { type: "file_started", path: file.path, index, sizeBytes: file.sizeBytes };
    yield { type: "file_completed", path: file.path, sha256: file.sha256, sizeBytes: file.sizeBytes, reused: true };
  }
  yield { type: "completed", cacheDir: report!.cacheDir, manifest, reusedBytes: manifest.totalSizeBytes };
}

/** The server's way out for hub and S3 requests, made (and the proxy variables read) with its first pull. */
export async function networkOf(runtime: Runtime) {
  runtime.network ??= {};
  runtime.network.dispatcher ??= (await import("../sources/network.js")).networkDispatcher(runtime.network.proxy);
  return runtime.network.dispatcher;
}
