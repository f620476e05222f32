// Moves an install out of the way, into .purge/, with one rename. The parked
// directory's name keeps the model's name and says why it was parked, so
// that startup recovery never has to guess:
//   <name>.<random>.swap    a promotion in progress: put it back if the model has no install
//   <name>.<random>.delete  a removal in progress (DropCache, UnregisterModel, a replaced install): finish it
import { randomBytes } from "node:crypto";
import { mkdir, rename } from "node:fs/promises";
import { join } from "node:path";
import { errorCode, filesystemError } from "../errors.js";
import { syncDirectory } from "../fs/durable.js";
import type { CacheLayout } from "./layout.js";

export type ParkIntent = "swap" | "delete";

/** The parked path, or undefined when the model had no install. The rename is synced before this returns. */
export async function parkInstall(layout: CacheLayout, name: string, intent: ParkIntent): Promise<string | undefined> {
  const from = layout.modelDir(name);
  const to = join(layout.purge, `${name}.${randomBytes(6).toString("hex")}.${intent}`);
  await mkdir(layout.purge, { recursive: true });
  layout.installsMoved += 1;
  try {
    await rename(from, to);
  } catch (err) {
    if (errorCode(err) === "ENOENT") return undefined;
    throw filesystemError("move the install aside", from, err);
  }
  await syncDirectory(layout.root);
  await syncDirectory(layout.purge);
  return to;
}

/** Turns a parked swap into a parked delete once the new install is in place (one synced rename); returns the new path. */
export async function markParkedForDelete(layout: CacheLayout, parked: string): Promise<string> {
  const to = parked.replace(/\.swap$/, ".delete");
  await rename(parked, to).catch((err: unknown) => {
    throw filesystemError("mark for deletion the replaced install", parked, err);
  });
  await syncDirectory(layout.purge);
  return to;
}

/**
 * The model a parked entry belongs to and why it was parked. An entry with
 * no intent comes from an earlier version, which parked only for swaps
 * and removed its deletes before answering.
 */
export function parkedEntry(entry: string): { name: string; intent: ParkIntent } {
  const parts = entry.split(".");
  return { name: parts[0] ?? "", intent: parts.length === 3 && parts[2] === "delete" ? "delete" : "swap" };
}
