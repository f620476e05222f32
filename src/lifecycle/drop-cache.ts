// DropCache: remove a model's artifacts (and resumable downloads) and keep its registration.
import { rm } from "node:fs/promises";
import { removeInstall } from "../cache/remove-install.js";
import { getModel } from "../registry/get-model.js";
import { recordNoInstall } from "../registry/record-install.js";
import type { Runtime } from "../runtime.js";

export async function dropCache(runtime: Runtime, name: string, signal: AbortSignal): Promise<{ removed: boolean; freedBytes: number }> {
  await getModel(runtime.registry, name);
  return runtime.locks.run(name, signal, async () => {
    const result = await removeInstall(runtime.layout, name);
    await rm(runtime.layout.partialDir(name), { recursive: true, force: true });
    await recordNoInstall(runtime.registry, name);
    return result;
  });
}
