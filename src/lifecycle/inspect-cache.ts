// InspectCache: a registered model's install as the disk shows it.
import { inspectInstall, type InstallReport } from "../cache/inspect-install.js";
import { getModel } from "../registry/get-model.js";
import type { Runtime } from "../runtime.js";

export async function inspectCache(runtime: Runtime, name: string, deep: boolean, signal: AbortSignal): Promise<InstallReport> {
  await getModel(runtime.registry, name);
  return inspectInstall(runtime.layout, name, deep, signal, (path, s) => runtime.copier.hash(path, s));
}
