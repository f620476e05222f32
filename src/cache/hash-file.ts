// sha256 of a file on disk, streamed, stopping when the signal aborts.
import { createHash } from "node:crypto";
import { readFileChunks } from "./read-file-chunks.js";

export async function hashFile(path: string, signal: AbortSignal): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of readFileChunks(path, signal)) hash.update(chunk);
  return hash.digest("hex");
}
