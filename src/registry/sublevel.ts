// A typed sublevel of the registry's LevelDB: the storage API the registry's
// users keep their records in, each module typing its own values.
import type { Level } from "level";

export type LevelSublevel<V> = ReturnType<typeof sublevelOf<V>>;

export function sublevelOf<V>(db: Level<string, unknown>, name: string, valueEncoding: "json" | "utf8") {
  return db.sublevel<string, V>(name, { valueEncoding });
}

/**
 * The sublevels modules outside the registry keep their records in, with the
 * encoding of each: one list, so no two modules share a name by accident.
 */
export const SUBLEVELS = {
  /** the content store: what it knows of each blob, by sha256 */
  blobs: "json",
  /** the content store: a source's id for content (a git blob id, an object version) -> its sha256 */
  "blob-ids": "utf8",
  /** leases on installs, by lease id, as versions before the lease journal kept them: moved into it at start */
  leases: "json",
} as const;

export type SublevelName = keyof typeof SUBLEVELS;
