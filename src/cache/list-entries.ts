// The entries of a directory under the cache root, none when it was never
// created; any other failure to list it is an error, never taken for empty.
import { readdir } from "node:fs/promises";
import { errorCode, filesystemError } from "../errors.js";

export async function listEntries(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (err) {
    // never created: nothing is there
    if (errorCode(err) === "ENOENT") return [];
    throw filesystemError("list", dir, err);
  }
}
