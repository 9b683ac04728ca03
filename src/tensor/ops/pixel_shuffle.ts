// Pixel shuffle (space-to-depth) of a square patch grid (shaders/pixel_shuffle.wgsl).
//
//   pixelShuffle(x, r)  x: [B, s·s, D] f32 → [B, G², r²·D], G = ⌊s/r⌋
//   y[b, i·G + j, (dy·r + dx)·D + d] = x[b, (i·r + dy)·s + (j·r + dx), d]
// A grid whose side is not a multiple of r is cropped to its top-left s' = G·r patches (the
// original SiQ-VL rejects such grids; callers that want that check s % r themselves). Backward
// routes each gradient back to its patch; cropped patches get 0.

import { record, Tensor } from "../tensor.ts";
import { kernel } from "../../gpu/kernel.ts";

const K = kernel("pixel_shuffle", {
  uniforms: ["n", "s", "r", "d", "g"],
  bindings: ["src", "dst"],
});

const WG = 256;

/** Space-to-depth: x [B, s·s, D] → [B, (⌊s/r⌋)², r²·D] (top-left crop when r ∤ s). */
export function pixelShuffle(x: Tensor, r: number): Tensor {
  if (x.dtype !== "f32") throw new Error(`pixelShuffle: expected f32, got ${x.describe()}`);
  if (x.ndim !== 3) throw new Error(`pixelShuffle: x must be [B, s·s, D], got ${x.describe()}`);
  if (!Number.isInteger(r) || r < 1) throw new Error(`pixelShuffle: bad factor ${r}`);
  const [batch, len, d] = x.shape;
  const s = Math.round(Math.sqrt(len));
  if (s * s !== len) {
    throw new Error(`pixelShuffle: ${len} patches in ${x.describe()} do not form a square grid`);
  }
  const g = Math.floor(s / r);
  if (g === 0) throw new Error(`pixelShuffle: factor ${r} exceeds the ${s}×${s} patch grid`);
  const gpu = x.gpu;
  const y = Tensor.empty(gpu, [batch, g * g, r * r * d], "f32");
  K.dispatch(gpu, "fwd", {
    u: { n: y.size, s, r, d, g },
    b: { src: x, dst: y },
    workgroups: Math.ceil(y.size / WG),
    label: "pixelShuffle",
  });
  return record("pixelShuffle", y, [x], (gy) => {
    const dx = Tensor.empty(gpu, x.shape, "f32");
    K.dispatch(gpu, "bwd", {
      u: { n: dx.size, s, r, d, g },
      b: { src: gy, dst: dx },
      workgroups: Math.ceil(dx.size / WG),
      label: "pixelShuffle backward",
    });
    return [dx];
  });
}
