// The registry's storage: one LevelDB under the data dir (a RegistryDatabase,
// reopened after a failed write) with a sublevel each for models, secrets and
// settings. Read-modify-write of a record goes through `records`, a per-name
// lock, so concurrent updates never lose one.
import { join } from "node:path";
import { KeyedLock } from "../concurrency/keyed-lock.js";
import { ModelCacheError, isOutOfSpace } from "../errors.js";
import { RecordCache } from "./record-cache.js";
import { RegistryDatabase } from "./registry-database.js";
import type { ModelRecord } from "./model-record.js";
import { type LevelSublevel, SUBLEVELS, type SublevelName, sublevelOf } from "./sublevel.js";
import { Vault } from "./vault.js";
import { loadVaultKey } from "./vault-key.js";

const SCHEMA_VERSION = 1;

export interface Registry {
  db: RegistryDatabase;
  models: LevelSublevel<ModelRecord>;
  /** the model records as last read, for hot synchronous reads */
  modelRecords: RecordCache<ModelRecord>;
  /** secrets by alias, sealed at rest */
  vault: Vault;
  settings: LevelSublevel<unknown>;
  /** the sublevel another module keeps its records in, typed by that module */
  sublevel<V>(name: SublevelName): LevelSublevel<V>;
  /** serialises read-modify-write of one model's record */
  records: KeyedLock;
  close(): Promise<void>;
}

export type { LevelSublevel } from "./sublevel.js";

export interface RegistryOptions {
  /** the vault key's file; default <dataDir>/vault.key, created on first start */
  vaultKeyFile?: string;
}

export async function openRegistry(dataDir: string, options: RegistryOptions = {}): Promise<Registry> {
  const location = join(dataDir, "registry");
  const db = new RegistryDatabase(location, { valueEncoding: "json" });
  try {
    await db.open();
  } catch (err) {
    const cause = (err as { cause?: unknown }).cause;
    if ((cause as { code?: string } | undefined)?.code === "LEVEL_LOCKED") {
      throw new ModelCacheError(
        "unavailable",
        `the data dir '${dataDir}' is in use by another modelcache server (its registry is locked); stop that server or choose another --data-dir`,
        { cause: err },
      );
    }
    // LevelDB's reason (a full disk, a corrupt file) is the cause of abstract-level's "Database failed to open"
    const reason = cause instanceof Error ? `${(err as Error).message}: ${cause.message}` : (err as Error).message;
    if (isOutOfSpace(err)) {
      throw new ModelCacheError("resource_exhausted", `failed to open the registry at '${location}': ${reason}; free space on that filesystem (opening recovers the registry's log, which needs room) and start again`, { cause: err });
    }
    throw new ModelCacheError("internal", `failed to open the registry at '${location}': ${reason}`, { cause: err });
  }
  const models = sublevelOf<ModelRecord>(db, "models", "json");
  const secrets = sublevelOf<string>(db, "secrets", "utf8");
  const settings = sublevelOf<unknown>(db, "settings", "json");
  const stored = await settings.get("schema_version");
  if (stored === undefined) {
    await settings.put("schema_version", SCHEMA_VERSION);
  } else if (stored !== SCHEMA_VERSION) {
    await db.close();
    throw new ModelCacheError(
      "failed_precondition",
      `the registry at '${location}' has schema version ${String(stored)}, this server understands ${SCHEMA_VERSION}: upgrade modelcache`,
    );
  }
  let vault: Vault;
  try {
    // after the registry's lock, so two servers starting at once cannot both make a key
    const held = await Vault.census(secrets);
    const key = await loadVaultKey(options.vaultKeyFile ?? join(dataDir, "vault.key"), held.sealed);
    vault = new Vault(secrets, key);
    if (held.plaintext) {
      // noted before sealing, so a crash between the sealing and the compaction compacts again next start
      await settings.put("vault_compacted", false);
      await vault.sealPlaintext();
    }
    if ((await settings.get("vault_compacted")) !== true) {
      // rewrite the files so plaintext an earlier version wrote leaves the disk
      await db.compactRange("!", '"');
      await settings.put("vault_compacted", true);
    }
  } catch (err) {
    await db.close();
    throw err;
  }
  const sublevels = new Map<SublevelName, LevelSublevel<unknown>>();
  return {
    db,
    models,
    modelRecords: new RecordCache(db, models),
    vault,
    settings,
    sublevel: <V>(name: SublevelName) => {
      // one instance per name, so every user of a sublevel shares it
      let sublevel = sublevels.get(name);
      if (!sublevel) sublevels.set(name, (sublevel = sublevelOf<unknown>(db, name, SUBLEVELS[name])));
      return sublevel as unknown as LevelSublevel<V>;
    },
    records: new KeyedLock(),
    close: () => db.close(),
  };
}
