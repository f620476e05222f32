// Keeps the registry in step with the disk, so that GetModel never vouches
// for an install that is not there: at startup for every model, and after
// each InspectCache for the model it inspected. A model whose install is
// gone becomes registered, one whose install is unhealthy is marked so, and
// a healthy install the registry missed (a crash between the promotion and
// the registry write, or an install repaired since) is recorded.
import { type InstallReport, inspectInstall } from "../cache/inspect-install.js";
import { listModels } from "../registry/list-models.js";
import type { ModelRecord } from "../registry/model-record.js";
import { type DiskFinding, agrees, recordFinding } from "../registry/record-install.js";
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
    if (await reconcileModel(runtime, model, report)) {
      result[report.status === "installed" ? "recovered" : report.status].push(model.name);
    }
  }
  return result;
}

/** Whether the model's record already says what `report` found. */
export function recordAgrees(seen: ModelRecord, report: InstallReport): boolean {
  return agrees(seen, findingOf(report));
}

/**
 * Records what `report` found on disk for `seen`'s model, unless the record
 * already says so or changed after it was read; whether it wrote.
 */
export async function reconcileModel(runtime: Pick<Runtime, "registry">, seen: ModelRecord, report: InstallReport): Promise<boolean> {
  return (await recordFinding(runtime.registry, seen, findingOf(report))) !== undefined;
}

function findingOf(report: InstallReport): DiskFinding {
  if (report.status !== "installed") return report.status === "missing" ? { status: "missing" } : { status: "unhealthy", cacheDir: report.cacheDir };
  const manifest = report.manifest!;
  return {
    status: "installed",
    install: { cacheDir: report.cacheDir, installedAtMs: manifest.installedAtMs, sizeBytes: manifest.totalSizeBytes, resolvedCommit: manifest.resolvedCommit },
  };
}
