// Repair: a model whose install holds content found corrupt is pulled again,
// in the background, from where its install came from: the local directory
// it was installed from, or its hub or object store when that can be
// reached. Never from its hub for an install from a directory (a local
// fine-tune is never silently swapped for the upstream model).
import type { Logger } from "pino";
import type { Runtime } from "../runtime.js";
import { originDirectory } from "./origin-directory.js";
import { pullModel } from "./pull-model.js";

/**
 * Pulls `name` again when its install is still marked as holding corrupt
 * content: "repaired", or "skipped" when it needs no repair or cannot be
 * repaired here (logged, naming why). A failed pull throws.
 */
export async function repairModel(runtime: Runtime, name: string, logger: Logger, signal: AbortSignal): Promise<"repaired" | "skipped"> {
  const model = await runtime.registry.models.get(name);
  if (!model || model.status !== "unhealthy" || !model.corrupt) return "skipped";
  let fixtureDir: string | undefined;
  try {
    fixtureDir = await originDirectory(runtime, model);
  } catch (err) {
    logger.warn({ model: name, err }, `not repaired automatically: ${(err as Error).message}`);
    return "skipped";
  }
  if (fixtureDir === undefined && (runtime.fixtureDir !== undefined || runtime.hub.offline)) {
    logger.warn({ model: name }, "not repaired automatically: the server pulls from its --fixture-dir or is offline; pull it again");
    return "skipped";
  }
  logger.info({ model: name, fixtureDir }, `repairing: pulling the model again from ${fixtureDir === undefined ? "its source" : `the directory it was installed from, '${fixtureDir}'`}`);
  for await (const event of pullModel(runtime, { name, fixtureDir: fixtureDir ?? "", credentialAlias: "", force: true, detach: true }, signal)) void event;
  return "repaired";
}
