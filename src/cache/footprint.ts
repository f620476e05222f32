// The regular files under a directory with their apparent sizes, without
// following symbolic links. Synchronous on purpose: an install holds tens of
// files, and a handful of stat calls in a row cost far less than as many
// round trips through the libuv thread pool.
import { lstatSync, readdirSync } from "node:fs";
import { join } from "node:path";

/** Relative '/'-separated path -> size in bytes, for every regular file below `dir`; undefined when `dir` cannot be listed. */
export function regularFiles(dir: string): Map<string, number> | undefined {
  const files = new Map<string, number>();
  const walk = (prefix: string): boolean => {
    let names: string[];
    try {
      names = readdirSync(prefix === "" ? dir : join(dir, prefix));
    } catch {
      return false;
    }
    for (const name of names) {
      const path = prefix === "" ? name : `${prefix}/${name}`;
      const stat = lstatSync(join(dir, path), { throwIfNoEntry: false });
      if (stat?.isFile()) files.set(path, stat.size);
      else if (stat?.isDirectory()) walk(path);
    }
    return true;
  };
  return walk("") ? files : undefined;
}

export function footprintBytes(dir: string): number {
  let total = 0;
  for (const size of regularFiles(dir)?.values() ?? []) total += size;
  return total;
}
