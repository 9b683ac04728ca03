// The GPU attention forward (shaders/attention_tiled.wgsl): K/V tiles in workgroup memory, one
// query row per invocation, online softmax. attention.ts calls it instead of its own fwd kernel
// where useGpuKernels(gpu) (not for the decode split, which already spreads the keys over
// invocations); it writes the same out and lse, so attention.ts's backward kernels apply as they
// are.

import { f32, type Gpu } from "../../gpu/device.ts";
import { kernel } from "../../gpu/kernel.ts";
import type { Tensor } from "../tensor.ts";

const TILED = kernel("attention_tiled", {
  uniforms: ["T", "S", "Hq", "Hkv", "G", "qoff", "causal", "masked", "scale"],
  bindings: ["q", "k", "v", "kmask", "o", "lse"],
});

const ROWS_PER_WG = 64;

/** Sizes of one attention call (q [B, T, Hq, D], k / v [B, S, Hkv, D]). */
export interface AttentionDims {
  B: number;
  T: number;
  S: number;
  Hq: number;
  Hkv: number;
  D: number;
}

/**
 * Record the tiled forward: out [B, T, Hq, D] and lse [B, Hq, T] from q, k, v (all f32, checked
 * by the caller), `kmask` the i32 [B, S] key mask or any read-only tensor when `masked` is false.
 */
export function attentionTiledForward(
  gpu: Gpu,
  d: AttentionDims,
  t: { q: Tensor; k: Tensor; v: Tensor; kmask: Tensor; o: Tensor; lse: Tensor },
  o: { causal: boolean; masked: boolean; qOffset: number; scale: number },
): void {
  const G = d.Hq / d.Hkv;
  TILED.dispatch(gpu, "fwd", {
    constants: { HD4: d.D / 4 },
    u: {
      T: d.T,
      S: d.S,
      Hq: d.Hq,
      Hkv: d.Hkv,
      G,
      qoff: o.qOffset,
      causal: o.causal ? 1 : 0,
      masked: o.masked ? 1 : 0,
      scale: f32(o.scale),
    },
    b: t,
    workgroups: [Math.ceil((G * d.T) / ROWS_PER_WG), d.B * d.Hkv],
    label: "attention fwd tiled",
  });
}
