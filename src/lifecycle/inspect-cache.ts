// InspectCache: a registered model's install as the disk shows it. What it
// finds becomes the registry's status too, so GetModel and ListModels agree
// with the last inspection without waiting for a restart. A deep inspection
// that finds stored content corrupt condemns it, like every other detector.
// An install moved away while it was read (a drop, an eviction, a pull
// replacing it) is inspected again: the answer is the install as it was
// before or after, never an error about a file the change removed.
import { join } from "node:path";
import { inspectInstall, inspectShallow, type InstallReport } from "../cache/inspect-install.js";
import { getModel, getModelNow } from "../registry/get-model.js";
import type { Runtime } from "../runtime.js";
import { reconcileModel, recordAgrees } from "./reconcile-registry.js";
import type { ModelRecord } from "../registry/model-record.js";
import { corruptInstall } from "../registry/record-install.js";
import { condemnContent } from "../store/condemn-content.js";
import { statBlob } from "../store/content-store.js";

/** a drop, then a pull, then another drop while one install is read: give up after that much churn */
const MOST_ATTEMPTS = 3;

export async function inspectCache(runtime: Runtime, name: string, deep: boolean, signal: AbortSignal): Promise<InstallReport> {
  const model = await getModel(runtime.registry, name);
  const found = await inspectSteadily(runtime, name, deep, signal);
  await condemnMismatched(runtime, found, signal);
  const report = withRecordedCorruption(model, found);
  await reconcileModel(runtime, model, report);
  return report;
}

/**
 * A shallow InspectCache answered without waiting on anything: the record
 * read at once, the install healthy and the registry already saying so.
 * Undefined when any of that is not so; inspectCache answers then (it looks
 * again at an install that moved while it looked, and records what it found).
 */
export function inspectCacheNow(runtime: Runtime, name: string): InstallReport | undefined {
  const model = getModelNow(runtime.registry, name);
  return model && healthyNow(runtime, model);
}

/** The model's install, when a shallow look finds it healthy and its record says so already. */
export function healthyNow(runtime: Pick<Runtime, "layout">, model: ModelRecord): InstallReport | undefined {
  const report = withRecordedCorruption(model, inspectShallow(runtime.layout, model.name));
  return report.status === "installed" && recordAgrees(model, report) ? report : undefined;
}

async function inspectSteadily(runtime: Runtime, name: string, deep: boolean, signal: AbortSignal): Promise<InstallReport> {
  for (let attempt = 1; ; attempt += 1) {
    const moved = runtime.layout.installsMoved;
    try {
      const report = await inspectInstall(runtime.layout, name, deep, signal, (path, s) => runtime.copier.hash(path, s));
      if (report.status === "installed" || runtime.layout.installsMoved === moved || attempt === MOST_ATTEMPTS) return report;
    } catch (err) {
      // an install moved away mid-way takes its files with it: look again at what is there now
      if (signal.aborted || runtime.layout.installsMoved === moved || attempt === MOST_ATTEMPTS) throw err;
    }
  }
}

/** A file found corrupt that is the stored content itself (not a copy of its own) condemns it. */
async function condemnMismatched(runtime: Runtime, report: InstallReport, signal: AbortSignal): Promise<void> {
  const { store } = runtime;
  for (const file of report.mismatched ?? []) {
    await store.withBlob(file.sha256, signal, async () => {
      const held = await statBlob(join(report.cacheDir, file.path));
      const stored = await statBlob(store.blobPath(file.sha256));
      if (held && stored && held.ino === stored.ino) await condemnContent(store, file.sha256, stored);
    });
  }
}

/**
 * A shallow check sees sizes, not content: content the background
 * verification found corrupt keeps the install UNHEALTHY until a pull
 * replaces it (a deep check finds it for itself).
 */
export function withRecordedCorruption(model: ModelRecord, report: InstallReport): InstallReport {
  if (report.status !== "installed" || !corruptInstall(model, report.manifest?.installedAtMs)) return report;
  const { path, sha256 } = model.corrupt!;
  return { ...report, status: "unhealthy", reason: "checksum_mismatch", detail: `${path}: its content no longer hashes to the manifest's sha256 ${sha256} (found corrupt and quarantined); pull the model again` };
}
