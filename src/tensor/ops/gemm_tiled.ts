// The GPU GEMM (shaders/gemm_tiled.wgsl): out[z, p, q] (+)= Σ_r L[z, p, r] · R[z, q, r]
// (+ bias[q]) read straight from the two row views' strides — no staging copy, any transpose —
// in 64 × 64 output tiles of 256 invocations. gemm.ts calls it first where useGpuKernels(gpu).
// R may be f32, bf16 or f16 (raw halves widened in the shader; an f16 R is read as vec4<f16> by
// the shader-f16 variant where the device has the feature).
//
// Bindings: R must fit one storage binding; L and the output are windowed by (batch, row range)
// when they do not (offsets rounded down to the alignment, the remainder added as an element
// shift). A case this cannot bind (one L row range past a binding, a buffer without room for the
// 16-byte rounding of a vec4 binding) returns false and the caller uses the texture kernel.

import type { Gpu } from "../../gpu/device.ts";
import { kernel } from "../../gpu/kernel.ts";
import { DTYPE_BYTES, type Tensor } from "../tensor.ts";
import { type Binding, maxBindingBytes, placeholderBuffer, spanBinding } from "../windows.ts";
import type { RowView } from "./matmul_pack.ts";
import type { GemmOptions } from "./gemm.ts";

const TILE = 64;
const MAX_GRID = 65535;

const UNIFORMS = [
  "M",
  "N",
  "K",
  "a_off",
  "a_rs",
  "a_ks",
  "a_bs",
  "b_off",
  "b_rs",
  "b_ks",
  "b_bs",
  "o_base",
  "o_bstride",
  "ldo",
  "flags",
  "amode",
  "bmode",
] as const;
const TILED = kernel("gemm_tiled", { uniforms: UNIFORMS, bindings: ["a", "b", "bh", "bias", "o"] });
// The shader-f16 variant (src/gpu/shaders.ts F16_VARIANTS): an f16 R read as vec4<f16>.
const TILED_F16 = kernel("gemm_tiled_f16", {
  uniforms: UNIFORMS,
  bindings: ["a", "b", "bh", "bias", "o", "bf"],
});

let nativeF16 = true;
/** Testing hook: false makes f16 weights take the packed-u32 path even with shader-f16. */
export function setNativeF16(on: boolean): void {
  nativeF16 = on;
}

// Elements [e0, e0 + n) of a view's tensor as a binding rounded up to whole 16-byte words (the
// shader reads array<vec4>), with the element shift; null when the buffer has no room for that.
function operand(t: Tensor, e0: number, n: number): { binding: Binding; shift: number } | null {
  const eb = DTYPE_BYTES[t.dtype];
  if (n * eb + t.gpu.limits.minStorageBufferOffsetAlignment + 16 > maxBindingBytes(t.gpu)) {
    return null;
  }
  const { binding, shift } = spanBinding(t, e0 * eb, n * eb, eb);
  const size = Math.ceil(binding.size / 16) * 16;
  if (binding.offset + size > binding.buffer.size || size > maxBindingBytes(t.gpu)) return null;
  return { binding: { ...binding, size }, shift };
}

// Elements a view touches for `batches` batches of `rows` rows: 1 + the largest offset.
const span = (v: RowView, batches: number, rows: number) =>
  (batches - 1) * v.bs + (rows - 1) * v.rs + Math.max(0, v.k - 1) * v.ks + 1;

// The uniform mode of an operand: bit 0 contiguous along rows, bit 1 vector loads (offset and
// strides multiples of the vector's q elements: 4 f32, 2 packed halves, 4 native f16).
function mode(v: RowView, off: number, batched: boolean, q: number): number {
  const alongRows = v.rs === 1 && v.ks !== 1 ? 1 : 0;
  const unit = alongRows ? v.rs : v.ks;
  const other = alongRows ? v.ks : v.rs;
  const aligned = unit === 1 && off % q === 0 && other % q === 0 && (!batched || v.bs % q === 0);
  return alongRows | (aligned ? 2 : 0);
}

/**
 * out[z, p, q] (+)= Σ_r L[z, p, r] · R[z, q, r] (+ bias[q]) with the tiled kernel (see the file
 * header); L f32, R f32 / f16 / bf16; out f32 [batches, P, Q] contiguous. Returns false (nothing
 * recorded) where it cannot bind the operands.
 */
export function gemmTiled(L: RowView, R: RowView, out: Tensor, opts: GemmOptions = {}): boolean {
  const gpu = out.gpu;
  const P = L.rows, Q = R.rows, K = L.k;
  const batches = Math.max(L.batches, R.batches);
  if (L.t.dtype !== "f32") return false;
  const half = R.t.dtype === "f16" || R.t.dtype === "bf16";
  const f16 = R.t.dtype === "f16" && gpu.features.shaderF16 && nativeF16;
  const qa = 4, qb = half && !f16 ? 2 : 4;
  if (Math.ceil(Q / TILE) > MAX_GRID || Math.ceil(P / TILE) > MAX_GRID) return false;
  const rb = operand(R.t, R.off, span(R, R.batches, Q));
  if (!rb) return false;
  const maxBind = maxBindingBytes(gpu);
  const flags = (opts.bias ? 1 : 0) | (opts.accumulate ? 2 : 0);
  const fixed = {
    N: Q,
    K,
    a_rs: L.rs,
    a_ks: L.ks,
    b_rs: R.rs,
    b_ks: R.ks,
    ldo: Q,
    flags,
  };
  const bindings = {
    b: half ? placeholderBuffer(gpu) : rb.binding,
    bh: half && !f16 ? rb.binding : placeholderBuffer(gpu),
    bias: opts.bias ? opts.bias.binding() : placeholderBuffer(gpu),
    ...(f16 ? { bf: rb.binding } : {}),
  };
  const kern = f16 ? TILED_F16 : TILED;
  const entry = f16 ? "tiled_f16" : half ? "tiled_half" : "tiled_f32";
  const constants = half && !f16 ? { BF16: R.t.dtype === "bf16" ? 1 : 0 } : undefined;
  const aStride = L.batches > 1 ? L.bs : 0;
  const bStride = R.batches > 1 ? R.bs : 0;

  const whole = operand(L.t, L.off, span(L, L.batches, P));
  if (whole && batches * P * Q * 4 <= maxBind && batches <= MAX_GRID) {
    kern.dispatch(gpu, entry, {
      constants,
      u: {
        ...fixed,
        M: P,
        a_off: whole.shift,
        a_bs: aStride,
        b_off: rb.shift,
        b_bs: bStride,
        o_bstride: P * Q,
        amode: mode(L, whole.shift, L.batches > 1, qa),
        bmode: mode(R, rb.shift, R.batches > 1, qb),
      },
      b: { ...bindings, a: whole.binding, o: out },
      workgroups: [Math.ceil(Q / TILE), Math.ceil(P / TILE), batches],
      label: `${entry} [${batches}, ${P}, ${Q}] k ${K}`,
    });
    return true;
  }
  // Windows of whole output rows, per batch, sized so both the output rows and the L rows they
  // read fit one binding.
  const align = gpu.limits.minStorageBufferOffsetAlignment;
  const lCap = Math.floor((maxBind - align - 16) / DTYPE_BYTES[L.t.dtype]);
  const kSpan = Math.max(0, K - 1) * L.ks + 1;
  const perL = kSpan > lCap ? 0 : Math.floor((lCap - kSpan) / Math.max(1, L.rs)) + 1;
  const perO = Math.floor((maxBind - align) / (Q * 4));
  const per = Math.min(perL, perO, P);
  if (per < 1) return false;
  const plan: { z: number; m0: number; mc: number; a: NonNullable<ReturnType<typeof operand>> }[] =
    [];
  for (let z = 0; z < batches; z++) {
    for (let m0 = 0; m0 < P; m0 += per) {
      const mc = Math.min(per, P - m0);
      const a = operand(L.t, L.off + z * aStride + m0 * L.rs, span(L, 1, mc));
      if (!a) return false;
      plan.push({ z, m0, mc, a });
    }
  }
  for (const { z, m0, mc, a } of plan) {
    const o = spanBinding(out, (z * P + m0) * Q * 4, mc * Q * 4);
    kern.dispatch(gpu, entry, {
      constants,
      u: {
        ...fixed,
        M: mc,
        a_off: a.shift,
        b_off: rb.shift + z * bStride,
        o_base: o.shift,
        amode: mode(L, a.shift, false, qa),
        bmode: mode(R, rb.shift + z * bStride, false, qb),
      },
      b: { ...bindings, a: a.binding, o: o.binding },
      workgroups: [Math.ceil(Q / TILE), Math.ceil(mc / TILE), 1],
      label: `${entry} window rows ${m0}.. of [${batches}, ${P}, ${Q}]`,
    });
  }
  return true;
}
