// A 32-bit FNV-1a digest of a typed array's bytes: how the page and Deno compare decoded pixels
// and preprocessed tensors without shipping them.

/** FNV-1a over the bytes of `data`, as 8 hex digits. */
export function digest(data: ArrayBufferView): string {
  const b = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  let h = 0x811c9dc5;
  for (let i = 0; i < b.length; i++) {
    h ^= b[i];
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, "0");
}
