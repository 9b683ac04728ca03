// Softmax over the last dim (shaders/softmax.wgsl).
//
//   softmax(x)   x [..., N] f32 → same shape; saves the output, backward dx = y ⊙ (g − Σ g ⊙ y).
//   Rows of at most 1024 run one per invocation, longer rows one per workgroup.

import { record, Tensor } from "../tensor.ts";
import { kernel } from "../../gpu/kernel.ts";

const K = kernel("softmax", { uniforms: ["rows", "n"], bindings: ["a", "b", "o"] });

/** Rows longer than this use one workgroup per row (shaders/softmax.wgsl *_wide). */
const SOFTMAX_WIDE = 1024;
const SOFTMAX_WG = 64;

function softmaxKernel(kind: "fwd" | "bwd", a: Tensor, b: Tensor | null, n: number): Tensor {
  const rows = a.size / n;
  const wide = n > SOFTMAX_WIDE;
  const out = Tensor.empty(a.gpu, a.shape, "f32");
  K.dispatch(a.gpu, `${kind}_${wide ? "wide" : "rows"}`, {
    u: { rows, n },
    b: { a, b, o: out },
    workgroups: wide ? rows : Math.ceil(rows / SOFTMAX_WG),
    label: `softmax ${kind}`,
  });
  return out;
}

/** Softmax over the last dim: x [..., N] f32 → same shape. */
export function softmax(x: Tensor): Tensor {
  if (x.dtype !== "f32" || x.ndim < 1) {
    throw new Error(`softmax: expected an f32 tensor [..., N], got ${x.describe()}`);
  }
  const n = x.shape[x.ndim - 1];
  if (n === 0) throw new Error(`softmax: empty last dim in ${x.describe()}`);
  if (x.size === 0) return Tensor.empty(x.gpu, x.shape, "f32");
  const y = softmaxKernel("fwd", x, null, n);
  return record("softmax", y, [x], (g) => [softmaxKernel("bwd", y, g, n)], [y]);
}
