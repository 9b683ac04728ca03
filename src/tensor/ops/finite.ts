// Finite check on the GPU (shaders/finite.wgsl): how many elements of a set of f32 tensors are
// NaN or ±Inf, with one 4-byte readback for all of them (no per-tensor readback).
//
//   countNonFinite(tensors)   tensors: f32, any shapes (windows past one storage binding are
//                             checked one by one) → count [1] i32 on the GPU (a running total
//                             that the kernel adds to)
//   nonFiniteCount(tensors)   the same, read back: a number
//
// The test is on the exponent bits (all ones), so it does not depend on NaN comparisons.

import { keep, noGrad, Tensor } from "../tensor.ts";
import { flatWindows } from "../windows.ts";
import { kernel } from "../../gpu/kernel.ts";

const K = kernel("finite", { uniforms: ["n"], bindings: ["x", "count"] });
const WG = 256;
/** Elements tested by one invocation (finite.wgsl PER). */
const PER_INVOCATION = 8;

/** Count the non-finite elements of `tensors` into a new [1] i32 tensor (on the GPU). */
export function countNonFinite(tensors: readonly Tensor[]): Tensor {
  if (tensors.length === 0) throw new Error("countNonFinite: no tensors");
  const gpu = tensors[0].gpu;
  for (const t of tensors) {
    if (t.dtype !== "f32") {
      throw new Error(`countNonFinite: only f32 tensors are checked, got ${t.describe()}`);
    }
  }
  const count = keep(noGrad(() => Tensor.from(gpu, [0], [1], "i32")));
  const cb = count.binding();
  for (const t of tensors) {
    if (t.size === 0) continue;
    for (const w of flatWindows(t)) {
      K.dispatch(gpu, "count_nonfinite", {
        u: { n: w.n },
        b: { x: w.binding, count: cb },
        workgroups: Math.ceil(w.n / (PER_INVOCATION * WG)),
        label: "countNonFinite",
      });
    }
  }
  return count;
}

/** The number of NaN / ±Inf elements in `tensors` (one readback). */
export async function nonFiniteCount(tensors: readonly Tensor[]): Promise<number> {
  if (tensors.length === 0) return 0;
  const c = countNonFinite(tensors);
  try {
    return await c.item();
  } finally {
    c.dispose();
  }
}
