// Adds an entry to an --auth-tokens file, creating it (mode 0600) if absent;
// the file is rewritten through a temp file and a rename, so a reader never
// sees half of it.
import { readFile } from "node:fs/promises";
import { writeFileDurably } from "../fs/durable.js";
import { ModelCacheError, quote } from "../errors.js";
import { AccessTokens, type TokenEntry } from "./access-tokens.js";

export async function addTokenEntry(file: string, entry: TokenEntry): Promise<void> {
  let tokens: TokenEntry[] = [];
  try {
    const text = await readFile(file, "utf8");
    AccessTokens.parse(text, file);
    tokens = (JSON.parse(text) as { tokens: TokenEntry[] }).tokens;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  if (tokens.some((t) => t.name === entry.name)) {
    throw new ModelCacheError("already_exists", `${quote(file)} already has a token named ${quote(entry.name)}: choose another --name, or remove that entry first`);
  }
  tokens.push(entry);
  await writeFileDurably(file, `${JSON.stringify({ tokens }, null, 2)}\n`, 0o600);
}
