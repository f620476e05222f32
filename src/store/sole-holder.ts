// Whether stored content is referenced by one install alone (and the store's
// own name for it): the links of the blob's inode, less the cache view's,
// are the store's one and the install's own paths to it.
import { lstatSync } from "node:fs";
import { installFiles } from "../cache/footprint.js";
import { viewLinksOf } from "../cache/view-links.js";

/** True when nothing but the install at `installDir` (and the store) links the blob at `blobPath`; false when unsure. */
export function heldOnlyBy(blobPath: string, installDir: string): boolean {
  const blob = lstatSync(blobPath, { throwIfNoEntry: false });
  if (!blob?.isFile()) return false;
  let own = 0;
  for (const stat of installFiles(installDir)?.values() ?? []) if (stat.ino === blob.ino && stat.dev === blob.dev) own += 1;
  return blob.nlink - viewLinksOf(blob) === 1 + own;
}
