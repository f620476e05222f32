// Opens the Hugging Face cache view at start: DIR checked to be on the cache
// root's filesystem, then reconciled with the installs the registry records,
// before the server reports SERVING.
import { MANIFEST_FILE, type CacheLayout } from "../cache/layout.js";
import type { Manifest } from "../cache/manifest.js";
import { readManifest } from "../cache/read-manifest.js";
import type { Registry } from "../registry/open-registry.js";
import { HfCacheView } from "./hf-cache-view.js";
import { join } from "node:path";

export async function openView(dir: string, layout: CacheLayout, registry: Registry): Promise<HfCacheView> {
  const view = await new HfCacheView(dir, layout).open();
  try {
    const installs = new Map<string, Manifest>();
    for await (const [name, record] of registry.models.iterator()) {
      if (!record.install || record.unregistering) continue;
      let manifest: Manifest;
      try {
        manifest = readManifest(join(layout.modelDir(name), MANIFEST_FILE));
      } catch {
        // an install without a readable manifest shows nothing in the view (the registry's reconciliation reports it)
        continue;
      }
      installs.set(name, manifest);
    }
    await view.reconcile(installs);
  } catch (err) {
    view.close();
    throw err;
  }
  return view;
}
