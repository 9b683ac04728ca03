// GPU tensors → checkpoint bytes (read back one tensor at a time, when the writer asks).

import type { TensorData } from "../io/tensor_input.ts";
import { encode, type Tensor } from "../tensor/mod.ts";

/** Stored dtype names of the tensor dtypes. */
export const STORED: Record<Tensor["dtype"], "F32" | "F16" | "BF16" | "I32"> = {
  f32: "F32",
  f16: "F16",
  bf16: "BF16",
  i32: "I32",
};

/** Raw little-endian bytes of a tensor in its own dtype (half types unpadded). */
export async function tensorRawBytes(t: Tensor): Promise<Uint8Array> {
  const n = t.size * (t.dtype === "f16" || t.dtype === "bf16" ? 2 : 4);
  return new Uint8Array(await t.gpu.read(t.storage.buffer, 0, n));
}

/**
 * A lazily read writer entry for `t`, stored as `dtype` (default: the tensor's own dtype;
 * a float tensor can be converted to F32 / F16 / BF16).
 */
export function tensorToSafetensors(t: Tensor, dtype?: "F32" | "F16" | "BF16"): TensorData {
  const target = dtype ?? STORED[t.dtype];
  return {
    dtype: target,
    shape: [...t.shape],
    data: async () => {
      if (target === STORED[t.dtype]) return await tensorRawBytes(t);
      if (t.dtype === "i32") throw new Error(`cannot store ${t.describe()} as ${target}`);
      const v = await t.readF32();
      const enc = encode(v, target === "F32" ? "f32" : target === "F16" ? "f16" : "bf16");
      return enc.subarray(0, t.size * (target === "F32" ? 4 : 2));
    },
  };
}
