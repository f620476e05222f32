// InspectCache: a registered model's install as the disk shows it. What it
// finds becomes the registry's status too, so GetModel and ListModels agree
// with the last inspection without waiting for a restart.
import { inspectInstall, type InstallReport } from "../cache/inspect-install.js";
import { getModel } from "../registry/get-model.js";
import type { Runtime } from "../runtime.js";
import { reconcileModel } from "./reconcile-registry.js";
import type { ModelRecord } from "../registry/model-record.js";
import { corruptInstall } from "../registry/record-install.js";

export async function inspectCache(runtime: Runtime, name: string, deep: boolean, signal: AbortSignal): Promise<InstallReport> {
  const model = await getModel(runtime.registry, name);
  const report = withRecordedCorruption(model, await inspectInstall(runtime.layout, name, deep, signal, (path, s) => runtime.copier.hash(path, s)));
  await reconcileModel(runtime, model, report);
  return report;
}

/**
 * A shallow check sees sizes, not content: content the background
 * verification found corrupt keeps the install UNHEALTHY until a pull
 * replaces it (a deep check finds it for itself).
 */
export function withRecordedCorruption(model: ModelRecord, report: InstallReport): InstallReport {
  if (report.status !== "installed" || !corruptInstall(model, report.manifest?.installedAtMs)) return report;
  const { path, sha256 } = model.corrupt!;
  return { ...report, status: "unhealthy", reason: "checksum_mismatch", detail: `${path}: its content no longer hashes to the manifest's sha256 ${sha256} (found by the background verification); pull the model again` };
}
