// InspectCache: a registered model's install as the disk shows it. What it
// finds becomes the registry's status too, so GetModel and ListModels agree
// with the last inspection without waiting for a restart.
import { inspectInstall, type InstallReport } from "../cache/inspect-install.js";
import { getModel } from "../registry/get-model.js";
import type { Runtime } from "../runtime.js";
import { reconcileModel } from "./reconcile-registry.js";

export async function inspectCache(runtime: Runtime, name: string, deep: boolean, signal: AbortSignal): Promise<InstallReport> {
  const model = await getModel(runtime.registry, name);
  const report = await inspectInstall(runtime.layout, name, deep, signal, (path, s) => runtime.copier.hash(path, s));
  await reconcileModel(runtime, model, report);
  return report;
}
