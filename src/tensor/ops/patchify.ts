// Patch extraction for a stride = kernel convolution (shaders/patchify.wgsl).
//
//   patchify(x, p)   x: [B, C, H, W] f32 → [B, ⌊H/p⌋·⌊W/p⌋, C·p·p]
//
// Patches are numbered row-major (top-left first); each patch vector is laid out (c, ky, kx), the
// order of a Conv2d weight [O, C, p, p] flattened to [O, C·p·p], so
// linear(patchify(x, p), w.view([O, C·p·p]), bias) is the convolution. Forward only: pixels never
// need a gradient.

import { Tensor } from "../tensor.ts";
import { kernel } from "../../gpu/kernel.ts";

const K = kernel("patchify", {
  uniforms: ["n", "c", "h", "w", "p", "gw", "np"],
  bindings: ["x", "o"],
});

const WG = 256;

/** im2col of non-overlapping p×p patches: [B, C, H, W] → [B, gh·gw, C·p·p]. */
export function patchify(x: Tensor, p: number): Tensor {
  if (x.dtype !== "f32" || x.ndim !== 4) {
    throw new Error(`patchify: expected f32 [B, C, H, W] images, got ${x.describe()}`);
  }
  const [b, c, h, w] = x.shape;
  if (!Number.isInteger(p) || p < 1 || h < p || w < p) {
    throw new Error(`patchify: patch size ${p} does not fit images ${x.describe()}`);
  }
  const gh = Math.floor(h / p), gw = Math.floor(w / p);
  const out = Tensor.empty(x.gpu, [b, gh * gw, c * p * p], "f32");
  K.dispatch(x.gpu, "patchify", {
    u: { n: out.size, c, h, w, p, gw, np: gh * gw },
    b: { x, o: out },
    workgroups: Math.ceil(out.size / WG),
    label: "patchify",
  });
  return out;
}
