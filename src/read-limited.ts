/**
 * A response body read whole, but no further than `limit` bytes: a remote answer that says
 * (Content-Length) or turns out to be larger throws `tooLarge()`, and what was not read is
 * never downloaded. For bodies Arbiter must hold in memory to check (bundle archives, key sets).
 */
export async function readLimited(response: Response, limit: number, tooLarge: () => Error): Promise<Buffer> {
  const declared = Number(response.headers.get('content-length'));
  if (Number.isFinite(declared) && declared > limit) {
    await response.body?.cancel();
    throw tooLarge();
  }
  const chunks: Uint8Array[] = [];
  let size = 0;
  // Leaving the loop early cancels the body.
  for await (const chunk of response.body ?? []) {
    size += chunk.byteLength;
    if (size > limit) throw tooLarge();
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}
