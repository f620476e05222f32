// The registry's model records as last read, so that a hot read (InspectCache,
// ResolveModel, GetModel at thousands a second) costs a map lookup instead
// of a trip through abstract-level, LevelDB and a JSON parse. A record is
// forgotten when a write of it begins and again when it ends, and a read made
// while a write of the same key is in flight is not remembered, so the cache
// never answers with a value the database no longer holds. The records handed
// out are frozen, deeply: one caller's change cannot reach another (a change
// is a new record, written back).
import type { RegistryDatabase } from "./registry-database.js";
import type { LevelSublevel } from "./sublevel.js";

/** names remembered at once (unregistered names asked for count too) */
const MOST_REMEMBERED = 4096;

export class RecordCache<V> {
  /** name -> the record (frozen), or null: no such record */
  readonly #records = new Map<string, V | null>();
  readonly #prefix: string;

  constructor(
    private readonly db: RegistryDatabase,
    private readonly sublevel: LevelSublevel<V>,
  ) {
    this.#prefix = sublevel.prefix;
    db.onChange((key) => {
      if (key === undefined) this.#records.clear();
      else if (key.startsWith(this.#prefix)) this.#records.delete(key.slice(this.#prefix.length));
    });
  }

  /** The record of `name` read synchronously (throws what getSync throws, e.g. while the registry reopens). */
  readSync(name: string): V | undefined {
    let record = this.#records.get(name);
    if (record === undefined) {
      const read = this.sublevel.getSync(name);
      record = read === undefined ? null : deepFreeze(read);
      if (!this.db.isChanging(this.#prefix + name)) {
        if (this.#records.size >= MOST_REMEMBERED) this.#records.delete(this.#records.keys().next().value!);
        this.#records.set(name, record);
      }
    }
    return record ?? undefined;
  }
}

/** Freezes a JSON value and everything in it. */
function deepFreeze<T>(value: T): T {
  if (typeof value === "object" && value !== null && !Object.isFrozen(value)) {
    for (const inner of Object.values(value)) deepFreeze(inner);
    Object.freeze(value);
  }
  return value;
}
