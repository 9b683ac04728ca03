// Dtype conversion (shaders/cast.wgsl): f32 <-> f16 / bf16, for tensors of any size.
//
//   cast(a, dtype) → same shape in `dtype`; f32 → half rounds to nearest even, half → f32 is exact;
//   f16 <-> bf16 goes through f32. No autograd node (half tensors carry no gradient; a cast to the
//   same dtype is a view). Tensors past one storage binding convert window by window
//   (pairedWindows, src/tensor/windows.ts).

import { type DType, Tensor } from "../tensor.ts";
import { pairedWindows } from "../windows.ts";
import { kernel } from "../../gpu/kernel.ts";

const K = kernel("cast", { uniforms: ["n", "mode"], bindings: ["src", "dst"] });

const WG = 256;

/** Convert to another dtype (any size); see the file header. */
export function cast(a: Tensor, dtype: DType): Tensor {
  if (a.dtype === dtype) return a.view(a.shape);
  const gpu = a.gpu;
  const half = (d: DType) => d === "f16" || d === "bf16";
  let out: Tensor;
  if ((a.dtype === "f32" && half(dtype)) || (half(a.dtype) && dtype === "f32")) {
    if (a.storage.refs <= 0) throw new Error(`cast of released tensor ${a.describe()}`);
    out = Tensor.empty(gpu, a.shape, dtype);
    const toHalf = dtype !== "f32";
    const mode = (toHalf ? dtype : a.dtype) === "bf16" ? 1 : 0;
    for (const w of pairedWindows(a, out)) {
      K.dispatch(gpu, toHalf ? "to_half" : "to_f32", {
        u: { n: w.n, mode },
        b: { src: w.a, dst: w.b },
        workgroups: Math.ceil((toHalf ? w.n / 2 : w.n) / WG),
        label: `cast ${a.dtype}->${dtype}`,
      });
    }
    return out;
  }
  if (half(a.dtype) && half(dtype)) {
    const mid = cast(a, "f32");
    out = cast(mid, dtype);
    mid.dispose();
    return out;
  }
  throw new Error(`cast: ${a.dtype} -> ${dtype} is not supported`);
}
