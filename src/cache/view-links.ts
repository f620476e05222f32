// Links to stored content that are not references: the Hugging Face cache
// view's (src/hf-cache-view/). Footprint arithmetic subtracts them, so a
// view never makes an install's content look shared.
import type { Stats } from "node:fs";

/** Each open view's count of its own links to an inode (by dev and ino). */
const counters = new Set<(dev: number, ino: number) => number>();

/** Registers a view's counter; returns its removal. */
export function countViewLinks(counter: (dev: number, ino: number) => number): () => void {
  counters.add(counter);
  return () => void counters.delete(counter);
}

/** How many of the inode's links are a view's. */
export function viewLinksOf(stat: Pick<Stats, "dev" | "ino">): number {
  let total = 0;
  for (const counter of counters) total += counter(stat.dev, stat.ino);
  return total;
}
