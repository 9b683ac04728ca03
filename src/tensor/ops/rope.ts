// Rotary position embedding (shaders/rope.wgsl), re-exported by attention.ts.
//
//   rope(x, positions, theta)   x [B, T, H, D] f32, positions i32 [B, T] → [B, T, H, D]
//     non-interleaved rotate-half: out = x·cos + rotate_half(x)·sin, rotate_half(x) =
//     cat(-x[D/2:], x[:D/2]); cos/sin of angle = f32(pos) · inv_freq[i mod D/2] (an f32 product),
//     inv_freq[i] = 1 / theta^(2i / D) rounded to f32 the way HF computes it in float32.
//   Backward applies the inverse rotation (sin → -sin) to the gradient.

import { f32, type Gpu } from "../../gpu/device.ts";
import { keep, record, Tensor } from "../tensor.ts";
import { kernel } from "../../gpu/kernel.ts";

const K = kernel("rope", {
  uniforms: ["pairs", "heads", "half", "sgn"],
  bindings: ["x", "pos", "inv_freq", "o"],
});

const WG = 64;

/** inv_freq as HF computes it in float32: 1 / theta^(f32(2i) / D), each step rounded to f32. */
export function ropeInvFreq(D: number, theta: number): Float32Array {
  const out = new Float32Array(D / 2);
  for (let i = 0; i < D / 2; i++) {
    const e = Math.fround((2 * i) / D);
    out[i] = Math.fround(1 / Math.fround(Math.pow(theta, e)));
  }
  return out;
}

// One small inv_freq table per (device, D, theta), kept for the life of the device.
const tables = new WeakMap<Gpu, Map<string, Tensor>>();

function invFreqTensor(gpu: Gpu, D: number, theta: number): Tensor {
  let m = tables.get(gpu);
  if (!m) tables.set(gpu, m = new Map());
  const key = `${D}:${theta}`;
  let t = m.get(key);
  if (!t || t.disposed) {
    t = keep(Tensor.from(gpu, ropeInvFreq(D, theta), [D / 2], "f32"));
    t.name = `rope inv_freq D=${D} theta=${theta}`;
    m.set(key, t);
  }
  return t;
}

function rotate(x: Tensor, positions: Tensor, inv: Tensor, sgn: 1 | -1): Tensor {
  const [, , H, D] = x.shape;
  const out = Tensor.empty(x.gpu, x.shape, "f32");
  const pairs = x.size / 2;
  K.dispatch(x.gpu, "rope", {
    u: { pairs, heads: H, half: D / 2, sgn: f32(sgn) },
    b: { x, pos: positions, inv_freq: inv, o: out },
    workgroups: Math.ceil(pairs / WG),
    label: sgn > 0 ? "rope" : "rope bwd",
  });
  return out;
}

/**
 * Rotary position embedding (HF Qwen2 layout): x [B, T, H, D] f32, positions i32 [B, T],
 * base `theta` → [B, T, H, D].
 */
export function rope(x: Tensor, positions: Tensor, theta: number): Tensor {
  if (x.dtype !== "f32" || x.ndim !== 4) {
    throw new Error(`rope: x must be f32 [B, T, H, D], got ${x.describe()}`);
  }
  const [B, T, , D] = x.shape;
  if (D % 2 !== 0 || D === 0) throw new Error(`rope: head dim ${D} must be even and non-zero`);
  if (
    positions.dtype !== "i32" || positions.ndim !== 2 || positions.shape[0] !== B ||
    positions.shape[1] !== T
  ) {
    throw new Error(`rope: positions must be i32 [${B}, ${T}], got ${positions.describe()}`);
  }
  if (!(theta > 0) || !Number.isFinite(theta)) {
    throw new Error(`rope: theta must be a positive finite number, got ${theta}`);
  }
  if (x.size === 0) return Tensor.empty(x.gpu, x.shape, "f32");
  const inv = invFreqTensor(x.gpu, D, theta);
  const out = rotate(x, positions, inv, 1);
  return record("rope", out, [x], (g) => [rotate(g, positions, inv, -1)], [positions]);
}
