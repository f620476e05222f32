// A local directory as an artifact source: regular files only, recursively;
// names starting with '.' and any manifest.json are skipped; symbolic links
// are never followed, neither while listing nor while reading.
import { readdir, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { ModelCacheError, filesystemError, quote } from "../errors.js";
import { MANIFEST_FILE, checkArtifactPath } from "../cache/layout.js";
import type { LocalSource, SourceFile } from "./artifact-source.js";

/** Lists `dir` (named by `field` in errors) as an artifact source. */
export async function openDirectorySource(dir: string, field: string): Promise<LocalSource> {
  const root = resolve(dir);
  const info = await stat(root).catch(() => undefined);
  if (!info?.isDirectory()) {
    throw new ModelCacheError("invalid_argument", `${field} ${quote(dir)} does not exist or is not a directory`);
  }
  const files = await listFiles(root, "");
  if (files.length === 0) {
    throw new ModelCacheError(
      "invalid_argument",
      `${field} ${quote(dir)} has no artifact files (names starting with '.', manifest.json and symbolic links are skipped)`,
    );
  }
  files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return {
    description: `dir:${root}`,
    directory: root,
    files,
    localPath: (file) => join(root, file.path),
  };
}

async function listFiles(root: string, prefix: string): Promise<SourceFile[]> {
  const dir = join(root, prefix);
  const entries = await readdir(dir, { withFileTypes: true }).catch((err: unknown) => {
    throw filesystemError("list the source directory", dir, err);
  });
  const files: SourceFile[] = [];
  for (const entry of entries) {
    if (entry.name.startsWith(".") || entry.name === MANIFEST_FILE) continue;
    const path = prefix === "" ? entry.name : `${prefix}/${entry.name}`;
    if (entry.isDirectory()) {
      files.push(...(await listFiles(root, path)));
    } else if (entry.isFile()) {
      checkArtifactPath(path, `source ${quote(root)}`);
      const info = await stat(join(root, path)).catch((err: unknown) => {
        throw filesystemError("read the size of", join(root, path), err);
      });
      files.push({ path, sizeBytes: info.size });
    }
  }
  return files;
}
