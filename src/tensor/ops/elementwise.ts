// Pointwise ops and reductions (shaders/elementwise.wgsl). cast() lives in cast.ts.
//
//   add(a, b)       a: [..., M], b: same shape or [M] (broadcast over leading dims, e.g. a bias)
//   mul(a, b)       same broadcasting as add
//   sub(a, b)       same shapes
//   scale(a, s)     s: number
//   sum(a)          [] — sum of all elements
//   sumRows(a, m)   [m] — sum over leading dims of a viewed as [rows, m]
//   sumOfSquares(tensors)  [] — Σ Σ x², over a list of f32 tensors (global gradient norm²)
// In-place (no autograd): addInPlace(a, b, s = 1): a += s·b; scaleInPlace(a, s); fill(...).

import { f32, type Gpu } from "../../gpu/device.ts";
import { kernel } from "../../gpu/kernel.ts";
import { record, Tensor } from "../tensor.ts";
import { flatWindows } from "../windows.ts";

const K = kernel("elementwise", {
  uniforms: ["n", "m", "s", "t", "off"],
  bindings: ["a", "b", "o"],
});

const WG = 256;
const REDUCE_CHUNK = 256 * 16;

function f32only(op: string, ...ts: Tensor[]): void {
  for (const t of ts) {
    if (t.dtype !== "f32") throw new Error(`${op}: expected f32, got ${t.describe()}`);
  }
}

function broadcastPeriod(op: string, a: Tensor, b: Tensor): number {
  if (b.size === a.size) return a.size;
  const last = a.shape[a.shape.length - 1];
  if (b.size === last && b.size > 0) return b.size;
  throw new Error(`${op}: cannot broadcast ${b.describe()} onto ${a.describe()}`);
}

// A view of a fresh tensor that replaces its handle (a bare .view() would leak the original).
function viewOwned(t: Tensor, shape: readonly number[]): Tensor {
  const v = t.view(shape);
  t.dispose();
  return v;
}

function binary(entry: "add" | "mul", a: Tensor, b: Tensor, m: number): Tensor {
  const out = Tensor.empty(a.gpu, a.shape, "f32");
  K.dispatch(a.gpu, entry, {
    u: { n: a.size, m },
    b: { a, b, o: out },
    workgroups: Math.ceil(a.size / WG),
    label: entry,
  });
  return out;
}

/** o = s·a + t·b (same shapes), no autograd. */
export function axpby(a: Tensor, b: Tensor, s: number, t: number): Tensor {
  const out = Tensor.empty(a.gpu, a.shape, "f32");
  K.dispatch(a.gpu, "axpby", {
    u: { n: a.size, m: a.size, s: f32(s), t: f32(t) },
    b: { a, b, o: out },
    workgroups: Math.ceil(a.size / WG),
    label: "axpby",
  });
  return out;
}

/** a + b; b may be [last dim of a] (broadcast). */
export function add(a: Tensor, b: Tensor): Tensor {
  f32only("add", a, b);
  const m = broadcastPeriod("add", a, b);
  const out = binary("add", a, b, m);
  return record("add", out, [a, b], (g) => [
    a.requiresGrad ? g.view(a.shape) : null,
    b.requiresGrad ? (m === a.size ? g.view(b.shape) : viewOwned(sumRows(g, m), b.shape)) : null,
  ]);
}

/** a − b (same shapes). */
export function sub(a: Tensor, b: Tensor): Tensor {
  f32only("sub", a, b);
  if (a.size !== b.size) throw new Error(`sub: ${a.describe()} vs ${b.describe()}`);
  const out = axpby(a, b, 1, -1);
  return record("sub", out, [a, b], (g) => [
    a.requiresGrad ? g.view(a.shape) : null,
    b.requiresGrad ? viewOwned(scale(g, -1), b.shape) : null,
  ]);
}

/** a ⊙ b; b may be [last dim of a] (broadcast). */
export function mul(a: Tensor, b: Tensor): Tensor {
  f32only("mul", a, b);
  const m = broadcastPeriod("mul", a, b);
  const out = binary("mul", a, b, m);
  return record("mul", out, [a, b], (g) => {
    const ga = a.requiresGrad ? binary("mul", g, b, m) : null;
    let gb: Tensor | null = null;
    if (b.requiresGrad) {
      const p = binary("mul", g, a, a.size);
      gb = m === a.size ? p : viewOwned(sumRows(p, m), b.shape);
      if (gb !== p) p.dispose();
    }
    return [ga, gb];
  }, [a, b]);
}

/** s · a. */
export function scale(a: Tensor, s: number): Tensor {
  f32only("scale", a);
  const out = Tensor.empty(a.gpu, a.shape, "f32");
  K.dispatch(a.gpu, "scale", {
    u: { n: a.size, m: a.size, s: f32(s) },
    b: { a, o: out },
    workgroups: Math.ceil(a.size / WG),
    label: "scale",
  });
  return record("scale", out, [a], (g) => [scale(g, s)]);
}

// The in-place ops and reductions below also take tensors larger than one storage binding (the
// f32 gradient of a 151936×896 tied embedding is 544 MB): they run once per flat window.

/** a += s · b, in place (no autograd; any size). */
export function addInPlace(a: Tensor, b: Tensor, s = 1): void {
  f32only("addInPlace", a, b);
  if (a.size !== b.size) throw new Error(`addInPlace: ${a.describe()} += ${b.describe()}`);
  const wb = flatWindows(b);
  flatWindows(a).forEach((w, k) => {
    K.dispatch(a.gpu, "add_inplace", {
      u: { n: w.n, m: w.n, s: f32(s) },
      b: { a: w.binding, b: wb[k].binding },
      workgroups: Math.ceil(w.n / WG),
      label: "add_inplace",
    });
  });
}

/** a *= s, in place (no autograd; any size). */
export function scaleInPlace(a: Tensor, s: number): void {
  f32only("scaleInPlace", a);
  for (const w of flatWindows(a)) {
    K.dispatch(a.gpu, "scale_inplace", {
      u: { n: w.n, m: w.n, s: f32(s) },
      b: { a: w.binding },
      workgroups: Math.ceil(w.n / WG),
      label: "scale_inplace",
    });
  }
}

/** Set every element of an f32 tensor to `value` (in place; any size). */
export function fillInPlace(t: Tensor, value: number): void {
  f32only("fill", t);
  for (const w of flatWindows(t)) {
    K.dispatch(t.gpu, "fill", {
      u: { n: w.n, m: w.n, s: f32(value) },
      b: { o: w.binding },
      workgroups: Math.ceil(w.n / WG),
      label: "fill",
    });
  }
}

/** A new f32 tensor filled with `value`. */
export function fill(gpu: Gpu, shape: readonly number[], value: number): Tensor {
  const t = Tensor.empty(gpu, shape, "f32");
  fillInPlace(t, value);
  return t;
}

/** A new f32 tensor of zeros. */
export function zeros(gpu: Gpu, shape: readonly number[]): Tensor {
  return fill(gpu, shape, 0);
}

/** Sum over the leading dims of `a` viewed as [rows, m] → [m]. */
export function sumRows(a: Tensor, m: number): Tensor {
  f32only("sumRows", a);
  if (a.size % m !== 0) throw new Error(`sumRows: ${a.describe()} is not [rows, ${m}]`);
  const out = Tensor.empty(a.gpu, [m], "f32");
  K.dispatch(a.gpu, "sum_rows", {
    u: { n: a.size, m },
    b: { a, o: out },
    workgroups: Math.ceil(m / WG),
    label: "sum_rows",
  });
  const rows = a.size / m;
  return record("sumRows", out, [a], (g) => {
    // Broadcast g [m] back over rows: zeros + g.
    const z = zeros(a.gpu, [rows, m]);
    const r = binary("add", z, g, m);
    z.dispose();
    return [viewOwned(r, a.shape)];
  });
}

// Two-pass reduction of many tensors into one scalar.
function reduce(entry: "sum_partial" | "sumsq_partial", ts: Tensor[]): Tensor {
  const gpu = ts[0].gpu;
  let parts = 0;
  for (const t of ts) for (const w of flatWindows(t)) parts += Math.ceil(w.n / REDUCE_CHUNK);
  const partial = Tensor.empty(gpu, [Math.max(1, parts)], "f32");
  let off = 0;
  for (const t of ts) {
    f32only(entry, t);
    for (const win of flatWindows(t)) {
      const w = Math.ceil(win.n / REDUCE_CHUNK);
      if (w === 0) continue;
      K.dispatch(gpu, entry, {
        u: { n: win.n, off },
        b: { a: win.binding, o: partial },
        workgroups: w,
        label: entry,
      });
      off += w;
    }
  }
  const out = Tensor.empty(gpu, [], "f32");
  if (off === 0) fillInPlace(out, 0);
  else {
    K.dispatch(gpu, "reduce_final", {
      u: { n: off },
      b: { a: partial, o: out },
      workgroups: 1,
      label: "reduce_final",
    });
  }
  partial.dispose();
  return out;
}

/** Sum of all elements → []. */
export function sum(a: Tensor): Tensor {
  const out = reduce("sum_partial", [a]);
  return record("sum", out, [a], (g) => {
    const z = zeros(a.gpu, a.shape);
    const r = binary("add", z, g, 1);
    z.dispose();
    return [r];
  });
}

/** Σ x² over every element of every tensor → [] (no autograd; for gradient clipping). */
export function sumOfSquares(ts: Tensor[]): Tensor {
  if (ts.length === 0) throw new Error("sumOfSquares of no tensors");
  return reduce("sumsq_partial", ts);
}

// cast() moved to its own op file (one per shader); re-exported for existing importers.
export { cast } from "./cast.ts";
