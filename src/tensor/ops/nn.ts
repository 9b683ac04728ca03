// Normalisations and activations (shaders/nn.wgsl).
//
//   layerNorm(x, w, b, eps)  x: [..., H] f32, w, b: [H] f32 → [..., H]
//                            y = (x − mean)/sqrt(var + eps)·w + b (biased variance, per row)
//   rmsNorm(x, w, eps)       x: [..., H] f32, w: [H] f32 → [..., H]
//                            y = w·x/sqrt(mean(x²) + eps) (Qwen2 RMSNorm, all in f32)
//   siluMul(gate, up)        gate, up: same shape f32 → silu(gate)·up (the SwiGLU product)
//   geluTanh(x)              x: f32 → 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
//
// The norms save x and per-row (mean, rstd) [rows, 2] for backward; the activations save their
// inputs. Backward kernels recompute x̂ from x and the saved statistics.

import { f32, type Gpu } from "../../gpu/device.ts";
import { kernel } from "../../gpu/kernel.ts";
import { record, Tensor } from "../tensor.ts";

const WG = 256;
/** Rows summed by one invocation of norm_bwd_w before the cross-chunk reduction. */
const ROW_CHUNK = 128;

type Mode = 0 | 1; // 0 = LayerNorm, 1 = RMSNorm

function requireF32(op: string, ...ts: Tensor[]): void {
  for (const t of ts) {
    if (t.dtype !== "f32") throw new Error(`${op}: expected f32, got ${t.describe()}`);
  }
}

function sameShape(a: Tensor, b: Tensor): boolean {
  return a.shape.length === b.shape.length && a.shape.every((d, i) => d === b.shape[i]);
}

const K = kernel("nn", {
  uniforms: ["n", "rows", "h", "mode", "eps", "chunk"],
  bindings: ["a", "b", "c", "dy", "stats", "o1", "o2"],
});

function checkNorm(op: string, x: Tensor, w: Tensor, b: Tensor | null, eps: number): number {
  requireF32(op, x, w, ...(b ? [b] : []));
  if (x.ndim < 1) throw new Error(`${op}: x must be [..., H], got ${x.describe()}`);
  const h = x.shape[x.ndim - 1];
  if (h === 0) throw new Error(`${op}: empty last dimension in ${x.describe()}`);
  for (const [name, t] of [["weight", w], ["bias", b]] as const) {
    if (t && (t.ndim !== 1 || t.shape[0] !== h)) {
      throw new Error(`${op}: ${name} must be [${h}] for x ${x.describe()}, got ${t.describe()}`);
    }
  }
  if (!(eps >= 0) || !Number.isFinite(eps)) throw new Error(`${op}: bad eps ${eps}`);
  return h;
}

// Column sums for dw (and db): Σ_rows dy·x̂ and Σ_rows dy → [2, H] (row 0: dw, row 1: db).
function normWeightGrads(gpu: Gpu, x: Tensor, dy: Tensor, stats: Tensor, h: number): Tensor {
  const rows = x.size / h;
  const chunks = Math.max(1, Math.ceil(rows / ROW_CHUNK));
  const part = Tensor.empty(gpu, [chunks, 2, h], "f32");
  K.dispatch(gpu, "norm_bwd_w", {
    u: { rows, h, chunk: ROW_CHUNK },
    b: { a: x, dy, stats, o1: part },
    workgroups: [Math.ceil(h / 64), chunks, 1],
    label: "norm_bwd_w",
  });
  if (chunks === 1) {
    const v = part.view([2, h]);
    part.dispose();
    return v;
  }
  const out = Tensor.empty(gpu, [2, h], "f32");
  K.dispatch(gpu, "col_reduce", {
    u: { n: 2 * h, rows: chunks, h },
    b: { a: part, o1: out },
    workgroups: Math.ceil((2 * h) / 64),
    label: "col_reduce",
  });
  part.dispose();
  return out;
}

// Row k of a [2, H] tensor as a new [H] tensor.
function rowOf(t: Tensor, k: number, h: number): Tensor {
  const r = Tensor.empty(t.gpu, [h], "f32");
  t.gpu.copy(t.storage.buffer, k * h * 4, r.storage.buffer, 0, h * 4);
  return r;
}

function norm(
  op: string,
  mode: Mode,
  x: Tensor,
  w: Tensor,
  b: Tensor | null,
  eps: number,
): Tensor {
  const h = checkNorm(op, x, w, b, eps);
  const gpu = x.gpu;
  const rows = x.size / h;
  const y = Tensor.empty(gpu, x.shape, "f32");
  const stats = Tensor.empty(gpu, [rows, 2], "f32");
  if (rows > 0) {
    K.dispatch(gpu, "norm_fwd", {
      u: { rows, h, mode, eps: f32(eps) },
      // RMSNorm has no bias: the weight is bound in its slot and ignored.
      b: { a: x, b: w, c: b ?? w, stats, o1: y },
      workgroups: rows,
      label: op,
    });
  }
  const inputs = b ? [x, w, b] : [x, w];
  record(op, y, inputs, (g) => {
    let dx: Tensor | null = null;
    if (x.requiresGrad) {
      dx = Tensor.empty(gpu, x.shape, "f32");
      K.dispatch(gpu, "norm_bwd_x", {
        u: { rows, h, mode, eps: f32(eps) },
        b: { a: x, b: w, dy: g, stats, o1: dx },
        workgroups: rows,
        label: `${op} backward x`,
      });
    }
    let dw: Tensor | null = null, db: Tensor | null = null;
    if (w.requiresGrad || b?.requiresGrad) {
      const both = normWeightGrads(gpu, x, g, stats, h);
      if (w.requiresGrad) dw = rowOf(both, 0, h);
      if (b?.requiresGrad) db = rowOf(both, 1, h);
      both.dispose();
    }
    return b ? [dx, dw, db] : [dx, dw];
  }, [x, w, stats]);
  stats.dispose(); // kept alive by the tape when recorded
  return y;
}

/** LayerNorm over the last dim: x [..., H], w [H], b [H] (f32) → [..., H]. */
export function layerNorm(x: Tensor, w: Tensor, b: Tensor, eps: number): Tensor {
  return norm("layerNorm", 0, x, w, b, eps);
}

/** RMSNorm over the last dim: x [..., H], w [H] (f32) → w·x/sqrt(mean(x²) + eps). */
export function rmsNorm(x: Tensor, w: Tensor, eps: number): Tensor {
  return norm("rmsNorm", 1, x, w, null, eps);
}

function pointwise(
  entry: string,
  n: number,
  b: { a: Tensor; b?: Tensor; dy?: Tensor; o1: Tensor; o2?: Tensor },
  label: string,
): void {
  K.dispatch(b.a.gpu, entry, { u: { n }, b, workgroups: Math.ceil(n / WG), label });
}

/** silu(gate) ⊙ up: gate, up same shape, f32. */
export function siluMul(gate: Tensor, up: Tensor): Tensor {
  requireF32("siluMul", gate, up);
  if (!sameShape(gate, up)) {
    throw new Error(`siluMul: gate ${gate.describe()} and up ${up.describe()} differ in shape`);
  }
  const n = gate.size;
  const y = Tensor.empty(gate.gpu, gate.shape, "f32");
  pointwise("silu_mul_fwd", n, { a: gate, b: up, o1: y }, "siluMul");
  return record("siluMul", y, [gate, up], (g) => {
    const dg = Tensor.empty(gate.gpu, gate.shape, "f32");
    const du = Tensor.empty(gate.gpu, gate.shape, "f32");
    pointwise("silu_mul_bwd", n, { a: gate, b: up, dy: g, o1: dg, o2: du }, "siluMul backward");
    if (!gate.requiresGrad) dg.dispose();
    if (!up.requiresGrad) du.dispose();
    return [gate.requiresGrad ? dg : null, up.requiresGrad ? du : null];
  }, [gate, up]);
}

/** GELU, tanh approximation (PyTorch "gelu_pytorch_tanh"): x f32 → same shape. */
export function geluTanh(x: Tensor): Tensor {
  requireF32("geluTanh", x);
  const n = x.size;
  const y = Tensor.empty(x.gpu, x.shape, "f32");
  pointwise("gelu_fwd", n, { a: x, o1: y }, "geluTanh");
  return record("geluTanh", y, [x], (g) => {
    const dx = Tensor.empty(x.gpu, x.shape, "f32");
    pointwise("gelu_bwd", n, { a: x, dy: g, o1: dx }, "geluTanh backward");
    return [dx];
  }, [x]);
}
