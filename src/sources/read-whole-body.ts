// A response body read whole, but never past a bound: a document the server
// only parses (a hub listing, a registry manifest, a token) that grows without
// end is cut off instead of held in memory.
export async function readWholeBody(body: AsyncIterable<unknown> & { destroy(): unknown }, maxBytes: number, tooLarge: () => Error): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let length = 0;
  for await (const chunk of body) {
    length += (chunk as Buffer).length;
    if (length > maxBytes) {
      body.destroy();
      throw tooLarge();
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}
