// What the listing routes (model info, tree, paths-info) answer from: the
// listing of a pull under way as soon as it is known, else the install.
import type { Runtime } from "../runtime.js";
import { listingOfPull } from "./await-pulled-file.js";
import { type ListedModel, chooseModel, dueForRecheck, findServedModel, isInstalled } from "./served-model.js";

/**
 * What the listing routes answer from: for a model not installed whose
 * policy pulls, the listing of its pull as soon as it is known; otherwise as
 * findServedModel.
 */
export async function findListedModel(runtime: Runtime, repo: string, revision: string, caller: string, signal: AbortSignal): Promise<ListedModel> {
  const record = await chooseModel(runtime, repo, revision);
  if (!isInstalled(record) && record.pullPolicy !== "never") {
    // the pull asks an ALWAYS model's source: that is its check of the minute
    dueForRecheck(runtime, record);
    const listed = await listingOfPull(runtime, record, signal);
    if (listed) return listed;
  }
  return findServedModel(runtime, repo, revision, caller, signal);
}
