// Startup check of the registry against the disk, so that GetModel never
// vouches for an install that is not there: a model whose install is gone
// becomes registered, one whose install is unhealthy is marked so, and a
// healthy install the registry missed (a crash between the promotion and
// the registry write) is recorded.
import { inspectInstall } from "../cache/inspect-install.js";
import { listModels } from "../registry/list-models.js";
import type { ModelRecord } from "../registry/model-record.js";
import { recordInstall, recordNoInstall, recordUnhealthyInstall } from "../registry/record-install.js";
import type { Runtime } from "../runtime.js";

export interface Reconciliation {
  missing: string[];
  unhealthy: string[];
  recovered: string[];
}

export async function reconcileRegistry(runtime: Pick<Runtime, "registry" | "layout">, signal: AbortSignal): Promise<Reconciliation> {
  const result: Reconciliation = { missing: [], unhealthy: [], recovered: [] };
  for (const model of await listModels(runtime.registry)) {
    const report = await inspectInstall(runtime.layout, model.name, false, signal);
    if (report.status === "missing" && model.status !== "registered") {
      await recordNoInstall(runtime.registry, model.name);
      result.missing.push(model.name);
    } else if (report.status === "unhealthy" && model.status !== "unhealthy") {
      await recordUnhealthyInstall(runtime.registry, model.name, report.cacheDir);
      result.unhealthy.push(model.name);
    } else if (report.status === "installed" && !matches(model, report.manifest!.installedAtMs)) {
      await recordInstall(runtime.registry, model.name, { cacheDir: report.cacheDir, installedAtMs: report.manifest!.installedAtMs, sizeBytes: report.manifest!.totalSizeBytes, resolvedCommit: report.manifest!.resolvedCommit });
      result.recovered.push(model.name);
    }
  }
  return result;
}

function matches(model: ModelRecord, installedAtMs: number): boolean {
  return model.status === "installed" && model.install?.installedAtMs === installedAtMs;
}
