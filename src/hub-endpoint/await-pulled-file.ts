// A model being pulled, answered before the whole model is in: the request
// starts or joins the model's pull (detached, so it runs to its end whoever
// leaves); a listing is answered as soon as the pull has the source's
// listing, a file as soon as it is verified in the content store. A
// consumer's per-request timeout is seconds; a model is not.
import { originDirectory } from "../pull/origin-directory.js";
import { pullModel } from "../pull/pull-model.js";
import type { ModelRecord } from "../registry/model-record.js";
import type { Runtime } from "../runtime.js";
import { type OpenedFile, openStoredContent } from "./open-served-file.js";
import { pullThroughError } from "./hub-errors.js";
import type { ListedModel } from "./served-model.js";

export interface PulledFile {
  file: OpenedFile;
  /** the commit being pulled (a hub's), else the model's revision */
  commit: string;
}

/**
 * Pulls `record` (or joins its pull) and resolves with `path` opened from the
 * store once the pull has verified it; undefined when the pull ended
 * without it (not in the model, or its content gone meanwhile): the install,
 * if any, answers then. A failed pull throws its error.
 */
export async function awaitPulledFile(runtime: Runtime, record: ModelRecord, path: string, signal: AbortSignal): Promise<PulledFile | undefined> {
  try {
    return await fileOfPull(runtime, record, path, signal);
  } catch (err) {
    throw pullThroughError(record.name, err);
  }
}

async function fileOfPull(runtime: Runtime, record: ModelRecord, path: string, signal: AbortSignal): Promise<PulledFile | undefined> {
  const fixtureDir = runtime.pulls.find(record.name) ? "" : ((await originDirectory(runtime, record)) ?? "");
  let commit = record.revision;
  for await (const event of pullModel(runtime, { name: record.name, fixtureDir, credentialAlias: "", force: false, detach: true }, signal)) {
    // "hub:org/name@<commit>"
    if (event.type === "started") commit = /@([0-9a-f]{40})$/.exec(event.source)?.[1] ?? commit;
    if (event.type !== "file_completed" || event.path !== path) continue;
    const file = await openStoredContent(runtime, event.sha256);
    if (file && file.size === event.sizeBytes) return { file, commit };
    // collected or condemned meanwhile: the install answers once the pull ends
    await file?.handle.close();
  }
  return undefined;
}

/**
 * Starts or joins the pull of `record` (detached) and resolves with its
 * listing as soon as the pull has one: the listing routes need no more.
 * Undefined when the pull has already ended (the install answers then).
 */
export async function listingOfPull(runtime: Runtime, record: ModelRecord, signal: AbortSignal): Promise<ListedModel | undefined> {
  const fixtureDir = runtime.pulls.find(record.name) ? "" : ((await originDirectory(runtime, record)) ?? "");
  const events = pullModel(runtime, { name: record.name, fixtureDir, credentialAlias: "", force: false, detach: true }, signal);
  try {
    // the job exists, its source listed, once its first event (queued, started, or a replay) comes
    const first = await events.next().catch((err: unknown) => {
      throw pullThroughError(record.name, err);
    });
    const job = runtime.pulls.find(record.name);
    if (first.done || first.value.type === "completed" || !job) return undefined;
    // a hub lists the git blob id of an LFS file's pointer, not of its content: such a file is shown by its sha256
    const files = job.source.files.map((file) => ({ path: file.path, sizeBytes: file.sizeBytes, sha256: file.sha256, gitBlobId: file.sha256 === undefined ? file.gitBlobId : undefined }));
    return { record, commit: job.source.resolvedCommit ?? record.revision, files, atMs: Date.now() };
  } finally {
    // detached: leaving does not stop the pull
    await events.return(undefined);
  }
}
