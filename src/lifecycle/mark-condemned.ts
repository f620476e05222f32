// What condemned content means for the models: every install that holds the
// condemned inode (its file there is that inode, whatever else its manifest
// says) is UNHEALTHY, naming the file, until a pull replaces it; GetModel
// and a shallow InspectCache say so, across restarts. A model whose pull is
// running may have staged a link to it: that pull checks its files when it
// records its install, and the model is reported so a repair can follow it.
import { lstat } from "node:fs/promises";
import { join } from "node:path";
import { MANIFEST_FILE } from "../cache/layout.js";
import { readManifest } from "../cache/read-manifest.js";
import { ModelCacheError, errorCode, filesystemError } from "../errors.js";
import type { Registry } from "../registry/open-registry.js";
import { recordCorrupt } from "../registry/record-install.js";
import type { Runtime } from "../runtime.js";
import type { Condemned } from "../store/content-store.js";

export interface Marked {
  /** models whose install holds the content, now UNHEALTHY */
  unhealthy: { name: string; path: string }[];
  /** models with a pull running, which may have staged a link to it */
  pulling: string[];
}

export async function markCondemned(runtime: Pick<Runtime, "layout"> & { registry: Registry; pulls?: Runtime["pulls"] }, condemned: Condemned): Promise<Marked> {
  const { registry, layout } = runtime;
  const marked: Marked = { unhealthy: [], pulling: [] };
  for (const name of await registry.models.keys().all()) {
    if (runtime.pulls?.find(name)) marked.pulling.push(name);
    const dir = layout.modelDir(name);
    let manifest;
    try {
      manifest = readManifest(join(dir, MANIFEST_FILE));
    } catch (err) {
      // no install, or one whose manifest is its inspection's finding: it names no content
      if (errorCode(err) === "ENOENT" || errorCode(err) === "ENOTDIR" || err instanceof ModelCacheError) continue;
      throw filesystemError("read", join(dir, MANIFEST_FILE), err);
    }
    for (const file of manifest.files) {
      if (file.sha256 !== condemned.sha256) continue;
      const held = await lstat(join(dir, file.path), { bigint: true }).catch((err: unknown) => {
        // gone since the manifest was read: the install was moved away
        if (errorCode(err) === "ENOENT") return undefined;
        throw filesystemError("read", join(dir, file.path), err);
      });
      if (held?.ino !== condemned.ino) continue;
      // marked already (the same finding seen again, by another server or a later pass): nothing new to repair
      const record = await registry.models.get(name);
      if (record?.status === "unhealthy" && record.corrupt?.sha256 === condemned.sha256 && record.corrupt.path === file.path && record.corrupt.installedAtMs === manifest.installedAtMs) break;
      const noted = await recordCorrupt(registry, name, { path: file.path, sha256: condemned.sha256, installedAtMs: manifest.installedAtMs }).catch((err: unknown) => {
        // unregistered meanwhile: its install goes with it
        if (err instanceof ModelCacheError && err.kind === "not_found") return false;
        throw err;
      });
      if (noted) marked.unhealthy.push({ name, path: file.path });
      break;
    }
  }
  return marked;
}
