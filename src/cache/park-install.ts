// Moves an install out of the way, into .purge/, with one rename. The name
// of the parked directory keeps the model's name, so a crash between the
// two renames of a promotion can be undone at startup.
import { randomBytes } from "node:crypto";
import { mkdir, rename } from "node:fs/promises";
import { join } from "node:path";
import { errorCode, filesystemError } from "../errors.js";
import type { CacheLayout } from "./layout.js";

/** The parked path, or undefined when the model had no install. */
export async function parkInstall(layout: CacheLayout, name: string): Promise<string | undefined> {
  const from = layout.modelDir(name);
  const to = join(layout.purge, `${name}.${randomBytes(6).toString("hex")}`);
  await mkdir(layout.purge, { recursive: true });
  try {
    await rename(from, to);
    return to;
  } catch (err) {
    if (errorCode(err) === "ENOENT") return undefined;
    throw filesystemError("move the install aside", from, err);
  }
}

/** The model name a parked directory belongs to. */
export function parkedModelName(entry: string): string {
  return entry.split(".")[0] ?? "";
}
