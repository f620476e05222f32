// Reads a file as a stream of chunks without following a symbolic link at
// its last component, stopping as soon as the signal aborts.
import { constants } from "node:fs";
import { open } from "node:fs/promises";

const CHUNK = 1024 * 1024;

export async function* readFileChunks(path: string, signal: AbortSignal): AsyncGenerator<Buffer> {
  signal.throwIfAborted();
  const handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  const stream = handle.createReadStream({ highWaterMark: CHUNK });
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      signal.throwIfAborted();
      yield chunk;
    }
  } finally {
    stream.destroy();
    await handle.close().catch(() => undefined);
  }
}
