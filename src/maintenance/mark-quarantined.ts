// Condemnations another server found: servers sharing a cache root share its
// quarantine (.blobs/quarantine/<sha256>.<inode>) but not their registries,
// so each looks there (at start and before each verification pass) and marks
// its own installs that hold a quarantined inode, as if it had found it.
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { errorCode, filesystemError } from "../errors.js";
import { type Marked, markCondemned } from "../lifecycle/mark-condemned.js";
import type { Runtime } from "../runtime.js";
import { SHA256 } from "../store/content-store.js";

const QUARANTINED = /^([0-9a-f]{64})\.(\d+)$/;

/** The models newly marked UNHEALTHY (and those being pulled, which may hold it too), for repair. */
export async function markQuarantined(runtime: Pick<Runtime, "registry" | "layout" | "store"> & { pulls?: Runtime["pulls"] }): Promise<Marked> {
  const { store } = runtime;
  const found: Marked = { unhealthy: [], pulling: [] };
  let names: string[];
  try {
    names = await readdir(store.quarantineDir);
  } catch (err) {
    // nothing was ever condemned on this cache root
    if (errorCode(err) === "ENOENT") return found;
    throw filesystemError("list", store.quarantineDir, err);
  }
  for (const name of names.sort()) {
    const match = QUARANTINED.exec(name);
    if (!match || !SHA256.test(match[1]!)) continue;
    const condemned = { sha256: match[1]!, ino: BigInt(match[2]!), sizeBytes: 0, quarantined: join(store.quarantineDir, name) };
    // a pull of this process that staged a link to it checks its install against this
    store.markCondemned(condemned.sha256, condemned.ino);
    const marked = await markCondemned(runtime, condemned);
    found.unhealthy.push(...marked.unhealthy);
    for (const pulling of marked.pulling) if (!found.pulling.includes(pulling)) found.pulling.push(pulling);
  }
  return found;
}
