// The GEMM (shaders/matmul.wgsl): out[z, p, q] (+)= Σ_r L[z, p, r] · R[z, q, r] (+ bias[q]) over
// two staged row views (matmul_pack.ts), with a register block of ROWS × 16 outputs per
// invocation. Contractions longer than one texture row run in chunks that accumulate; an output
// beyond one storage binding is written per (batch, row range) window.

import type { Gpu } from "../../gpu/device.ts";
import { kernel } from "../../gpu/kernel.ts";
import type { Tensor } from "../tensor.ts";
import { maxBindingBytes, spanBinding } from "../windows.ts";
import { MAX_TEXELS, pack, releaseTexture, type RowView } from "./matmul_pack.ts";
import { tuning } from "../tuning.ts";

/** Output columns per GEMM invocation (fixed by matmul.wgsl). */
const COLS = 16;
/** Longest contraction one GEMM pass handles (32768 = 8192 texels × 4). */
const K_CHUNK = 4 * MAX_TEXELS;
const MAX_GRID = 65535;

const LAYOUT = {
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
  ],
  bindings: ["ta", "tb", "tbh", "bias", "o"],
} as const;
const GEMM = kernel("matmul", LAYOUT);

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

const dummies = new WeakMap<Gpu, GPUBuffer>();

// A 16-byte buffer bound as `bias` when there is none.
function dummyBias(gpu: Gpu): GPUBuffer {
  let b = dummies.get(gpu);
  if (!b) {
    b = gpu.device.createBuffer({ size: 16, usage: GPUBufferUsage.STORAGE, label: "no bias" });
    dummies.set(gpu, b);
  }
  return b;
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
  const biasBinding = opts.bias ? opts.bias.binding() : dummyBias(gpu);
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
