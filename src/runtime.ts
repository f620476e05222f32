// What the domain operations share while the server runs: the registry, the
// cache layout, the per-model install lock and the server's settings.
import type { CacheLayout } from "./cache/layout.js";
import type { KeyedLock } from "./concurrency/keyed-lock.js";
import type { Registry } from "./registry/open-registry.js";

export interface Runtime {
  registry: Registry;
  layout: CacheLayout;
  /** one pull or drop per model at a time */
  installs: KeyedLock;
  /** the server's --fixture-dir, used when a pull names none */
  fixtureDir: string | undefined;
  /** the least time between two file_progress events of one pull */
  progressIntervalMs: number;
}
