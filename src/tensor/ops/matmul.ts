// Matrix products (shaders/matmul_pack.wgsl, shaders/matmul.wgsl).
//
//   matmul(a, b, {transA?, transB?, bias?}) → [..., M, N] f32
//     a: [..., M, K] (transA: [..., K, M]); f32, or f16/bf16 (widened, no gradient)
//     b: [K, N] (transB: [N, K]) shared by every leading index of a, or batched [..., K, N]
//        ([..., N, K]) with exactly a's leading dims; f32, f16 or bf16 (packed two per u32)
//     bias: [N] f32, added in the GEMM epilogue
//   linear(x, w, bias?) = matmul(x, w, {transB: true, bias}): x [..., in], w [out, in] → [..., out]
//   Backward: dA = g·op(B)ᵀ (transposed back for transA), dB = op(A)ᵀ·g only when b requires a
//   gradient (b must then be f32; a shared b sums over the leading dims), dbias = Σ_rows g.
//
// Every product, forward or backward, is brought to the one form the GEMM kernel computes,
//   X[z, p, q] = Σ_r L[z, p, r] · R[z, q, r]          (z: batch, r: contraction),
// where L and R are "row views" of tensors: element (z, p, r) sits at
//   off + z·bs + p·rs + r·ks   (elements).
// A row view is staged ("packed") into a 2-D array texture — row p of batch z is texture row
// z·rows + p, 4 contraction elements per rgba32float texel (8 raw halves per rgba32uint texel for
// half weights) — and the GEMM reads those textures. On llvmpipe a texture fetch is a vectorised
// 16-byte gather while a storage-buffer load is a scalar loop over the SIMD lanes; staging costs
// O(M·K + N·K) and makes the O(M·N·K) part 1.6–2.6× faster (bench/RESULTS.md). Packing absorbs
// the transposes and strides, so the GEMM has a single layout.
//
// Sizes beyond one storage binding (maxStorageBufferBindingSize, 128 MiB on lavapipe): a source
// tensor is read through windows (row ranges, or contraction ranges for column-major views) whose
// offsets are rounded down to minStorageBufferOffsetAlignment, the remainder travelling as an
// element offset; an output beyond one binding is written per (batch, row range) window. A texture
// holds 8192 rows per layer and up to 8192 texels per row, so contractions longer than 32768 run
// in chunks that accumulate into the output.
//
// Staging textures are cached for reuse (trimMatmulCache() frees them). A frozen weight read many
// times can be pinned (pinMatmulWeight) so it is staged only once.

import { record, Tensor } from "../tensor.ts";
import { sumRows } from "./elementwise.ts";
import { gemm, gemmNN } from "./gemm.ts";
import { view } from "./matmul_pack.ts";

export { type MatmulTiles, matmulTiles, setMatmulTiles } from "./gemm.ts";
export { pinMatmulWeight, trimMatmulCache, unpinMatmulWeight } from "./matmul_pack.ts";

/** Options of matmul(). */
export interface MatmulOptions {
  /** a holds [..., K, M]. */
  transA?: boolean;
  /** b holds [N, K] (the Linear weight layout). */
  transB?: boolean;
  /** [N] f32, added to every output row. */
  bias?: Tensor;
}

// ---- the ops ----

function isFloat(t: Tensor): boolean {
  return t.dtype === "f32" || t.dtype === "f16" || t.dtype === "bf16";
}

function sameDims(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/**
 * a·b with optional transposes of the last two dims and a fused bias. See the file header for
 * shapes, dtypes and the backward.
 */
export function matmul(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
  const { transA = false, transB = false, bias } = opts;
  const desc = `matmul(${a.describe()}, ${b.describe()}${transA ? ", transA" : ""}${
    transB ? ", transB" : ""
  })`;
  if (!isFloat(a) || !isFloat(b)) throw new Error(`${desc}: operands must be f32, f16 or bf16`);
  if (a.ndim < 2) throw new Error(`${desc}: a needs at least 2 dims ([..., M, K])`);
  if (b.ndim < 2) throw new Error(`${desc}: b needs at least 2 dims ([K, N] or [N, K])`);
  if (a.gpu !== b.gpu) throw new Error(`${desc}: operands live on different devices`);
  const lead = a.shape.slice(0, -2);
  const M = transA ? a.shape[a.ndim - 1] : a.shape[a.ndim - 2];
  const K = transA ? a.shape[a.ndim - 2] : a.shape[a.ndim - 1];
  const Kb = transB ? b.shape[b.ndim - 1] : b.shape[b.ndim - 2];
  const N = transB ? b.shape[b.ndim - 2] : b.shape[b.ndim - 1];
  if (K !== Kb) throw new Error(`${desc}: contraction sizes differ (${K} vs ${Kb})`);
  const shared = b.ndim === 2;
  if (!shared && !sameDims(b.shape.slice(0, -2), lead)) {
    throw new Error(`${desc}: a batched b must have a's leading dims [${lead}]`);
  }
  if (bias) {
    if (bias.dtype !== "f32" || bias.size !== N || bias.ndim !== 1) {
      throw new Error(`${desc}: bias must be f32 [${N}], got ${bias.describe()}`);
    }
  }
  if (a.dtype !== "f32" && a.requiresGrad) {
    throw new Error(`${desc}: a requires a gradient, so it must be f32`);
  }
  if (b.dtype !== "f32" && b.requiresGrad) {
    throw new Error(`${desc}: b requires a gradient, so it must be f32 (got ${b.dtype})`);
  }
  const Z = lead.reduce((x, y) => x * y, 1);
  const gpu = a.gpu;
  const out = Tensor.empty(gpu, [...lead, M, N], "f32");
  if (out.size === 0) return out;

  // Row views of the operands: A rows m, B rows n, both along k.
  const aRowsM = transA ? view(a, M, K, 1, M, Z, M * K) : view(a, M, K, K, 1, Z, M * K);
  const bStride = shared ? 0 : K * N;
  const bBatches = shared ? 1 : Z;
  const bRowsN = transB
    ? view(b, N, K, K, 1, bBatches, bStride)
    : view(b, N, K, 1, N, bBatches, bStride);
  if (shared && !transA) {
    // Fold the leading dims into M.
    gemm(view(a, Z * M, K, K, 1), bRowsN, out, { bias });
  } else {
    gemm(aRowsM, bRowsN, out, { bias });
  }

  const inputs = bias ? [a, b, bias] : [a, b];
  // dA needs b, dB needs a: keep only those alive (a frozen weight's input is not saved).
  const save = [...(a.requiresGrad ? [b] : []), ...(b.requiresGrad ? [a] : [])];
  return record("matmul", out, inputs, (g) => {
    let da: Tensor | null = null;
    let db: Tensor | null = null;
    // g rows m along n, and rows n along m.
    const gRowsM = view(g, M, N, N, 1, Z, M * N);
    const gRowsN = view(g, N, M, 1, N, Z, M * N);
    if (a.requiresGrad) {
      // B rows k along n.
      const bRowsK = transB
        ? view(b, K, N, 1, K, bBatches, bStride)
        : view(b, K, N, N, 1, bBatches, bStride);
      da = Tensor.empty(gpu, a.shape, "f32");
      if (!transA) {
        // A Linear-layout b [N, K] is read through its forward staging (bRowsN, rows n along k)
        // by the transposed GEMM, instead of packing its columns (bRowsK).
        const gFlat = view(g, Z * M, N, N, 1);
        if (!(shared && transB && gemmNN(gFlat, bRowsN, da))) {
          if (shared) gemm(gFlat, bRowsK, da);
          else gemm(gRowsM, bRowsK, da);
        }
      } else {
        gemm(bRowsK, gRowsM, da); // dA stored [K, M]
      }
    }
    if (b.requiresGrad) {
      db = Tensor.empty(gpu, b.shape, "f32");
      // A rows k along m.
      const aRowsK = (z: number, batches: number) =>
        transA
          ? view(a, K, M, M, 1, batches, M * K, z * M * K)
          : view(a, K, M, 1, K, batches, M * K, z * M * K);
      const gN = (z: number, batches: number) => view(g, N, M, 1, N, batches, M * N, z * M * N);
      if (!shared) {
        if (transB) gemm(gRowsN, aRowsK(0, Z), db);
        else gemm(aRowsK(0, Z), gRowsN, db);
      } else if (!transA) {
        // Contract over all leading rows at once: a as [Z·M, K], g as [Z·M, N].
        const aK = view(a, K, Z * M, 1, K);
        const gNf = view(g, N, Z * M, 1, N);
        if (transB) gemm(gNf, aK, db);
        else gemm(aK, gNf, db);
      } else {
        for (let z = 0; z < Z; z++) {
          const opts = { accumulate: z > 0 };
          if (transB) gemm(gN(z, 1), aRowsK(z, 1), db, opts);
          else gemm(aRowsK(z, 1), gN(z, 1), db, opts);
        }
      }
    }
    const dbias = bias?.requiresGrad ? sumRows(g, N) : null;
    return [da, db, dbias];
  }, save);
}

/** x·wᵀ + bias with w in the Linear layout: x [..., in], w [out, in], bias [out] → [..., out]. */
export function linear(x: Tensor, w: Tensor, bias?: Tensor): Tensor {
  if (w.ndim !== 2) throw new Error(`linear: weight must be [out, in], got ${w.describe()}`);
  if (x.ndim < 1 || x.shape[x.ndim - 1] !== w.shape[1]) {
    throw new Error(`linear: input ${x.describe()} does not end in ${w.shape[1]} features`);
  }
  if (x.ndim === 1) {
    return matmul(x.reshape([1, w.shape[1]]), w, { transB: true, bias }).reshape([w.shape[0]]);
  }
  return matmul(x, w, { transB: true, bias });
}
