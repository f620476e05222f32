// Reads and parses a manifest.json, remembering the parse of each file
// version: a manifest is only ever replaced by a rename, so the same inode,
// size and nanosecond mtime mean the same bytes, and a stat is all a
// repeated InspectCache needs instead of a read and a parse.
import { type Stats, readFileSync, statSync } from "node:fs";
import { type Manifest, parseManifest } from "./manifest.js";

const MAX_REMEMBERED = 1024;
const parsed = new Map<string, { version: string; manifest: Manifest }>();

/**
 * The parsed manifest at `path`; throws the filesystem error, or
 * invalid_argument when it does not parse. `stat`: the file's stat when the
 * caller has just taken it, saving another.
 */
export function readManifest(path: string, stat: Stats = statSync(path)): Manifest {
  // mtimeMs and ctimeMs carry sub-microsecond digits
  const version = `${stat.ino}:${stat.size}:${stat.mtimeMs}:${stat.ctimeMs}`;
  const known = parsed.get(path);
  if (known?.version === version) return known.manifest;
  const manifest = parseManifest(readFileSync(path, "utf8"));
  if (parsed.size >= MAX_REMEMBERED) parsed.delete(parsed.keys().next().value!);
  parsed.set(path, { version, manifest });
  return manifest;
}
