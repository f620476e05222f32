// A file of a model being pulled, answered before the whole model is in: the
// request starts or joins the model's pull (detached, so it runs to its end
// whoever leaves) and is answered as soon as that file is verified in the
// content store. A consumer's per-file timeout is seconds; a model is not.
import { originDirectory } from "../pull/origin-directory.js";
import { pullModel } from "../pull/pull-model.js";
import type { ModelRecord } from "../registry/model-record.js";
import type { Runtime } from "../runtime.js";
import { type OpenedFile, openStoredContent } from "./open-served-file.js";

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
