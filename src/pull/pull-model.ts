// Pull: install a registered model's artifacts from its source, streaming
// events. Checks run in the contract's order: name, registration,
// credential alias, source; the first failure ends the pull.
import { installArtifacts } from "../cache/install-artifacts.js";
import { ModelCacheError } from "../errors.js";
import { getModel } from "../registry/get-model.js";
import type { ModelRecord } from "../registry/model-record.js";
import { checkName } from "../registry/names.js";
import { recordInstall } from "../registry/record-install.js";
import { readSecret } from "../registry/secrets.js";
import type { Runtime } from "../runtime.js";
import type { ArtifactSource } from "../sources/artifact-source.js";
import { openDirectorySource } from "../sources/local-directory.js";
import type { PullEvent } from "./pull-event.js";

export interface PullModelRequest {
  name: string;
  /** "" when the request names none */
  fixtureDir: string;
  /** "" to use the model's own alias */
  credentialAlias: string;
  force: boolean;
}

export async function* pullModel(runtime: Runtime, request: PullModelRequest, signal: AbortSignal): AsyncGenerator<PullEvent> {
  const model = await getModel(runtime.registry, request.name);
  await resolveCredential(runtime, model, request.credentialAlias);
  const source = await openSource(runtime, request);

  const release = await runtime.installs.acquire(model.name, signal);
  try {
    const totalBytes = source.files.reduce((sum, f) => sum + f.sizeBytes, 0);
    yield { type: "started", source: source.description, fileCount: source.files.length, totalBytes };
    const manifest = yield* installArtifacts({
      layout: runtime.layout,
      name: model.name,
      source,
      model: { source: model.source, revision: model.revision, task: model.task, engine: model.engine, dimensions: model.dimensions },
      signal,
      progressIntervalMs: runtime.progressIntervalMs,
    });
    const cacheDir = runtime.layout.modelDir(model.name);
    await recordInstall(runtime.registry, model.name, { cacheDir, installedAtMs: manifest.installedAtMs, sizeBytes: manifest.totalSizeBytes });
    yield { type: "completed", cacheDir, manifest };
  } finally {
    release();
  }
}

/** The secret a pull would authenticate with, if the pull names an alias (its own, else the model's). */
async function resolveCredential(runtime: Runtime, model: ModelRecord, requestAlias: string): Promise<string | undefined> {
  const field = requestAlias !== "" ? "credential_alias" : "model.credential_alias";
  const alias = requestAlias !== "" ? requestAlias : model.credentialAlias;
  if (alias === "") return undefined;
  checkName(field, alias);
  const secret = await readSecret(runtime.registry, alias);
  if (secret === undefined) {
    throw new ModelCacheError(
      "failed_precondition",
      `credential alias '${alias}' (${field}) has no secret stored: store one with PutSecret {"alias": "${alias}", "value": "..."} and pull again`,
    );
  }
  return secret;
}

async function openSource(runtime: Runtime, request: PullModelRequest): Promise<ArtifactSource> {
  if (request.fixtureDir !== "") return openDirectorySource(request.fixtureDir, "fixture_dir");
  if (runtime.fixtureDir !== undefined) return openDirectorySource(runtime.fixtureDir, "the server's --fixture-dir");
  throw new ModelCacheError(
    "failed_precondition",
    "no artifact source: set fixture_dir in the PullRequest, or start the server with --fixture-dir DIR (env MODELCACHE_FIXTURE_DIR)",
  );
}
