// Reading an HTTP body (a request's, or a fetched image's) with a byte cap: refused from its
// Content-Length when that already says too much, else as soon as the bytes read pass the cap.

/** The bytes of `body`, at most `limit`; `tooLarge()` is thrown past it (the body cancelled). */
export async function readLimited(
  body: ReadableStream<Uint8Array> | null,
  limit: number,
  contentLength: string | null,
  tooLarge: () => Error,
): Promise<Uint8Array> {
  if (Number(contentLength ?? NaN) > limit) {
    await body?.cancel();
    throw tooLarge();
  }
  const chunks: Uint8Array[] = [];
  let total = 0;
  if (body) {
    const reader = body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.length;
      if (total > limit) {
        await reader.cancel();
        throw tooLarge();
      }
      chunks.push(value);
    }
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}
