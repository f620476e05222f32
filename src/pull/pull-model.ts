// Pull: install a registered model's artifacts from its source, streaming
// events. Checks run in the contract's order: name, registration,
// credential alias, source; the first failure ends the pull.
import { ModelCacheError } from "../errors.js";
import { getModel } from "../registry/get-model.js";
import type { ModelRecord } from "../registry/model-record.js";
import { checkName } from "../registry/names.js";
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
  detach: boolean;
}

/**
 * The events of the model's pull job: a new one, or the one already running,
 * which this call attaches to (a source given with it is then not read).
 */
export async function* pullModel(runtime: Runtime, request: PullModelRequest, signal: AbortSignal): AsyncGenerator<PullEvent> {
  const model = await getModel(runtime.registry, request.name);
  await resolveCredential(runtime, model, request.credentialAlias);
  let job = runtime.pulls.find(model.name);
  if (!job) {
    const source = await openSource(runtime, request);
    job = runtime.pulls.find(model.name) ?? runtime.pulls.start(model, source, request.force);
  } else if (request.force) {
    throw new ModelCacheError(
      "aborted",
      `a pull of model '${model.name}' is already ${job.state} (from ${job.source.description}); force cannot restart it: attach without force, or wait for it to end`,
    );
  }
  yield* job.attach(request.detach, signal);
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
