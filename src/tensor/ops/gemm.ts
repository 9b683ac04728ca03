// The GEMM (shaders/matmul.wgsl): out[z, p, q] (+)= Σ_r L[z, p, r] · R[z, q, r] (+ bias[q]) over
// two staged row views (matmul_pack.ts), with a register block of ROWS × 16 outputs per
// invocation. Contractions longer than one texture row run in chunks that accumulate; an output
// beyond one storage binding is written per (batch, row range) window.

import type { Gpu } from "../../gpu/device.ts";
import { kernel } from "../../gpu/kernel.ts";
import type { Tensor } from "../tensor.ts";
import { maxBindingBytes, placeholderBuffer, spanBinding } from "../windows.ts";
import { MAX_TEXELS, pack, releaseTexture, type RowView } from "./matmul_pack.ts";
import { tuning } from "../tuning.ts";
import { useGpuKernels } from "../variants.ts";
import { gemmTiled } from "./gemm_tiled.ts";

/** Output columns per GEMM invocation (fixed by matmul.wgsl). */
const COLS = 16;
/** Longest contraction one GEMM pass handles (32768 = 8192 texels × 4). */
const K_CHUNK = 4 * MAX_TEXELS;
const MAX_GRID = 65535;

const GEMM_LAYOUT = {
  uniforms: [
    "M",
    "N",
    "kt",
    "a_row",
    "a_bstride",
    "b_row",
    "b_bstride",
    "o_base",
    "o_bstride",
    "ldo",
    "flags",
    "kr",
  ],
  bindings: ["ta", "tb", "tbh", "bias", "o"],
} as const;
const GEMM = kernel("matmul", GEMM_LAYOUT);

// ---- tile shape ----

/** GEMM tile shape: invocations per workgroup (WG) and output rows per invocation (ROWS ≤ 16). */
export interface MatmulTiles {
  wg: number;
  rows: number;
}

const tileOverrides = new WeakMap<Gpu, MatmulTiles>();

/**
 * The tile shape used on `gpu`: {wg 8, rows 16} on a CPU (fallback) adapter such as lavapipe —
 * one 256-bit SIMD vector, big register blocks — and {wg 64, rows 4} on a GPU (or when
 * tuning.forceGpuVariants / SIQVL_KERNELS=gpu asks for the GPU variants).
 */
export function matmulTiles(gpu: Gpu): MatmulTiles {
  return tileOverrides.get(gpu) ??
    (gpu.isFallbackAdapter && !tuning.forceGpuVariants ? { wg: 8, rows: 16 } : { wg: 64, rows: 4 });
}

/** Override the tile shape (tests, tuning); null restores the default. */
export function setMatmulTiles(gpu: Gpu, tiles: MatmulTiles | null): void {
  if (!tiles) {
    tileOverrides.delete(gpu);
    return;
  }
  const { wg, rows } = tiles;
  const maxWg = Math.min(
    gpu.limits.maxComputeInvocationsPerWorkgroup,
    gpu.limits.maxComputeWorkgroupSizeX,
  );
  if (!Number.isInteger(wg) || wg < 1 || wg > maxWg) {
    throw new Error(`setMatmulTiles: wg must be an integer in 1..${maxWg}, got ${wg}`);
  }
  if (!Number.isInteger(rows) || rows < 1 || rows > 16) {
    throw new Error(`setMatmulTiles: rows must be an integer in 1..16, got ${rows}`);
  }
  tileOverrides.set(gpu, { wg, rows });
}

// 1×1 textures bound in the R slot gemm_nn_* does not read (layout "auto" needs both).
const dummyTextures = new WeakMap<Gpu, { f32: GPUTextureView; u32: GPUTextureView }>();
function dummyTexture(gpu: Gpu, kind: "f32" | "u32"): GPUTextureView {
  let d = dummyTextures.get(gpu);
  if (!d) {
    const make = (format: GPUTextureFormat) =>
      gpu.device.createTexture({ size: [1, 1, 1], format, usage: GPUTextureUsage.TEXTURE_BINDING })
        .createView({ dimension: "2d-array" });
    d = { f32: make("rgba32float"), u32: make("rgba32uint") };
    dummyTextures.set(gpu, d);
  }
  return d[kind];
}

// ---- the GEMM ----

export interface GemmOptions {
  bias?: Tensor;
  /** Add into `out` instead of overwriting it. */
  accumulate?: boolean;
}

/**
 * out[z, p, q] (+)= Σ_r L[z, p, r] · R[z, q, r] (+ bias[q]); out is f32 [batches, P, Q]
 * contiguous. R may be f32 or f16/bf16; L is widened to f32 while packing.
 */
export function gemm(L: RowView, R: RowView, out: Tensor, opts: GemmOptions = {}): void {
  const gpu = out.gpu;
  const P = L.rows, Q = R.rows, K = L.k;
  const batches = Math.max(L.batches, R.batches);
  if (P === 0 || Q === 0 || batches === 0) return;
  // GPU variant (a discrete GPU, or SIQVL_KERNELS=gpu): the workgroup-tiled kernel reads both
  // operands in their own layouts (gemm_tiled.ts); it declines only bindings it cannot make.
  if (useGpuKernels(gpu) && gemmTiled(L, R, out, opts)) return;
  const half = R.t.dtype === "f16" || R.t.dtype === "bf16";
  const maxBind = maxBindingBytes(gpu);
  const entry = half ? "gemm_half" : "gemm_f32";
  const tiles = matmulTiles(gpu);
  // Single-row products (decoding) use the 1-row variant of the kernel.
  const rows = P === 1 ? 1 : tiles.rows;
  const tileN = COLS * tiles.wg;
  // Only non-default overrides, so the common pipelines share one cache key.
  const constants: Record<string, number> = {};
  if (half) constants.BF16 = R.t.dtype === "bf16" ? 1 : 0;
  if (rows !== 16) constants.ROWS = rows;
  if (tiles.wg !== 8) constants.WG = tiles.wg;
  const biasBinding = opts.bias ? opts.bias.binding() : placeholderBuffer(gpu);
  const outBytes = batches * P * Q * 4;
  const chunks = Math.max(1, Math.ceil(K / K_CHUNK));
  if (Math.ceil(P / rows) > MAX_GRID || Math.ceil(Q / tileN) > MAX_GRID) {
    throw new Error(`matmul: output [${P}, ${Q}] exceeds the dispatch grid`);
  }
  for (let c = 0; c < chunks; c++) {
    const r0 = c * K_CHUNK;
    const rc = Math.min(K_CHUNK, K - r0);
    const kt = half ? Math.ceil(rc / 8) : Math.ceil(rc / 4);
    const wA = Math.max(1, half ? 2 * kt : kt);
    const ta = pack(L, r0, rc, wA, false);
    const tb = pack(R, r0, rc, Math.max(1, kt), half);
    const flags = (opts.bias && c === 0 ? 1 : 0) | (opts.accumulate || c > 0 ? 2 : 0);
    const tex = half ? { ta: ta.view, tbh: tb.view } : { ta: ta.view, tb: tb.view };
    const aStride = L.batches > 1 ? P : 0;
    const bStride = R.batches > 1 ? Q : 0;
    if (outBytes <= maxBind) {
      if (batches > MAX_GRID) throw new Error(`matmul: ${batches} batches exceed the grid`);
      GEMM.dispatch(gpu, entry, {
        constants,
        u: {
          M: P,
          N: Q,
          kt,
          a_bstride: aStride,
          b_bstride: bStride,
          o_bstride: P * Q,
          ldo: Q,
          flags,
        },
        b: { ...tex, bias: biasBinding, o: out },
        workgroups: [Math.ceil(P / rows), Math.ceil(Q / tileN), batches],
        label: `${entry} [${batches}, ${P}, ${Q}] k ${rc}`,
      });
    } else {
      // Output windows of whole rows, per batch.
      const rowBytes = Q * 4;
      const per = Math.floor((maxBind - gpu.limits.minStorageBufferOffsetAlignment) / rowBytes);
      if (per < 1) throw new Error(`matmul: one output row of ${Q} columns exceeds a binding`);
      for (let z = 0; z < batches; z++) {
        for (let m0 = 0; m0 < P; m0 += per) {
          const mc = Math.min(per, P - m0);
          const { binding, shift } = spanBinding(out, (z * P + m0) * rowBytes, mc * rowBytes);
          GEMM.dispatch(gpu, entry, {
            constants,
            u: {
              M: mc,
              N: Q,
              kt,
              a_row: z * aStride + m0,
              b_row: z * bStride,
              o_base: shift,
              ldo: Q,
              flags,
            },
            b: { ...tex, bias: biasBinding, o: binding },
            workgroups: [Math.ceil(mc / rows), Math.ceil(Q / tileN), 1],
            label: `${entry} window rows ${m0}.. of [${batches}, ${P}, ${Q}]`,
          });
        }
      }
    }
    if (!ta.pinned) releaseTexture(gpu, ta);
    if (!tb.pinned) releaseTexture(gpu, tb);
  }
}

/**
 * out[p, q] (+)= Σ_r L[p, r] · S[r, q] (+ bias[q]) with S a row view whose rows are the
 * contraction (S.rows = L.k) and whose elements run along the outputs (S.k = Q): S is staged the
 * way the forward stages it (a copy for a row-major weight), and gemm_nn_* reads it along the
 * columns — no transposing pack. Returns false (nothing recorded) where this path does not apply:
 * batches, a contraction past one texture row, more columns than a texture row, an output past one
 * binding, or tuning.transposedGemm off.
 */
export function gemmNN(L: RowView, S: RowView, out: Tensor, opts: GemmOptions = {}): boolean {
  const gpu = out.gpu;
  const P = L.rows, K = L.k, Q = S.k;
  if (!tuning.transposedGemm || S.rows !== K || L.batches !== 1 || S.batches !== 1) return false;
  // GPU variant: gemm()'s tiled kernel reads the transposed view itself, so no gemm_nn here.
  if (useGpuKernels(gpu)) return false;
  const half = S.t.dtype === "f16" || S.t.dtype === "bf16";
  const perTexel = half ? 8 : 4;
  if (K === 0 || P === 0 || Q === 0 || K > K_CHUNK || Q > perTexel * MAX_TEXELS) return false;
  if (P * Q * 4 > maxBindingBytes(gpu)) return false;
  const tiles = matmulTiles(gpu);
  const rows = P === 1 ? 1 : tiles.rows;
  if (Math.ceil(P / rows) > MAX_GRID || Math.ceil(Q / (COLS * tiles.wg)) > MAX_GRID) return false;
  const constants: Record<string, number> = {};
  if (half) constants.BF16 = S.t.dtype === "bf16" ? 1 : 0;
  if (rows !== 16) constants.ROWS = rows;
  if (tiles.wg !== 8) constants.WG = tiles.wg;
  const kt = Math.ceil(K / 4);
  // S texels cover the 16 columns of every invocation: round the width up to whole blocks.
  const width = Math.ceil(Math.ceil(Q / COLS) * COLS / perTexel);
  const ta = pack(L, 0, K, kt, false);
  const tb = pack(S, 0, Q, width, half);
  GEMM.dispatch(gpu, half ? "gemm_nn_half" : "gemm_nn_f32", {
    constants,
    u: { M: P, N: Q, kt, ldo: Q, kr: K, flags: (opts.bias ? 1 : 0) | (opts.accumulate ? 2 : 0) },
    b: {
      ta: ta.view,
      tb: half ? dummyTexture(gpu, "f32") : tb.view,
      tbh: half ? tb.view : dummyTexture(gpu, "u32"),
      bias: opts.bias ? opts.bias.binding() : placeholderBuffer(gpu),
      o: out,
    },
    workgroups: [Math.ceil(P / rows), Math.ceil(Q / (COLS * tiles.wg)), 1],
    label: `gemm_nn [${P}, ${Q}] k ${K}`,
  });
  if (!ta.pinned) releaseTexture(gpu, ta);
  if (!tb.pinned) releaseTexture(gpu, tb);
  return true;
}
