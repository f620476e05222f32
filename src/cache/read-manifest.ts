// Reads and parses a manifest.json, remembering the parse of each file
// version: a manifest is only ever replaced by a rename, so the same inode,
// size and nanosecond mtime mean the same bytes, and a stat is all a
// repeated InspectCache needs instead of a read and a parse.
import { readFileSync, statSync } from "node:fs";
import { type Manifest, parseManifest } from "./manifest.js";

const MAX_REMEMBERED = 1024;
const parsed = new Map<string, { version: string; manifest: Manifest }>();

/** The parsed manifest at `path`; throws the filesystem error, or invalid_argument when it does not parse. */
export function readManifest(path: string): Manifest {
  const stat = statSync(path, { bigint: true });
  const version = `${stat.ino}:${stat.size}:${stat.mtimeNs}:${stat.ctimeNs}`;
  const known = parsed.get(path);
  if (known?.version === version) return known.manifest;
  const manifest = parseManifest(readFileSync(path, "utf8"));
  if (parsed.size >= MAX_REMEMBERED) parsed.delete(parsed.keys().next().value!);
  parsed.set(path, { version, manifest });
  return manifest;
}
