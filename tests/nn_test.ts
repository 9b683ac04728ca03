// Norms, activations and pixel shuffle against float64 references (forward and backward), and
// finite-difference checks of the references themselves.

import { assertClose, gpu, GPU_TEST, rand, TOL } from "./util.ts";
import {
  geluTanh,
  layerNorm,
  noGrad,
  pixelShuffle,
  rmsNorm,
  siluMul,
  Tensor,
} from "../src/tensor/mod.ts";

type Arr = ArrayLike<number>;

// ---- float64 references: forward and the gradients of L = Σ up ⊙ y ----

function normRef(x: Arr, w: Arr, b: Arr | null, h: number, eps: number, up: Arr) {
  const rows = x.length / h;
  const y = new Float64Array(x.length), dx = new Float64Array(x.length);
  const dw = new Float64Array(h), db = new Float64Array(h);
  for (let r = 0; r < rows; r++) {
    const o = r * h;
    let mean = 0;
    if (b) {
      for (let j = 0; j < h; j++) mean += x[o + j];
      mean /= h;
    }
    let q = 0;
    for (let j = 0; j < h; j++) q += (x[o + j] - mean) ** 2;
    const rstd = 1 / Math.sqrt(q / h + eps);
    let s1 = 0, s2 = 0;
    for (let j = 0; j < h; j++) {
      const xh = (x[o + j] - mean) * rstd;
      y[o + j] = xh * w[j] + (b ? b[j] : 0);
      const gw = up[o + j] * w[j];
      s1 += gw;
      s2 += gw * xh;
      dw[j] += up[o + j] * xh;
      db[j] += up[o + j];
    }
    for (let j = 0; j < h; j++) {
      const xh = (x[o + j] - mean) * rstd;
      dx[o + j] = rstd * (up[o + j] * w[j] - (b ? s1 / h : 0) - xh * s2 / h);
    }
  }
  return { y, dx, dw, db };
}

const sig = (x: number) => 1 / (1 + Math.exp(-x));
function siluMulRef(g: Arr, u: Arr, up: Arr) {
  const n = g.length;
  const y = new Float64Array(n), dg = new Float64Array(n), du = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const s = sig(g[i]);
    y[i] = g[i] * s * u[i];
    dg[i] = up[i] * u[i] * s * (1 + g[i] * (1 - s));
    du[i] = up[i] * g[i] * s;
  }
  return { y, dg, du };
}

const K = Math.sqrt(2 / Math.PI);
function geluRef(x: Arr, up: Arr) {
  const n = x.length;
  const y = new Float64Array(n), dx = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const v = x[i];
    const t = Math.tanh(K * (v + 0.044715 * v ** 3));
    y[i] = 0.5 * v * (1 + t);
    dx[i] = up[i] * (0.5 * (1 + t) + 0.5 * v * (1 - t * t) * K * (1 + 3 * 0.044715 * v * v));
  }
  return { y, dx };
}

const dot = (a: Arr, b: Arr) => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
};

// Central differences of L(inputs) = Σ up ⊙ f(inputs) against the analytical gradient.
function fdCheck(
  what: string,
  inputs: Float64Array[],
  grads: ArrayLike<number>[],
  f: (xs: Float64Array[]) => Arr,
  up: Arr,
): void {
  const h = 1e-6;
  for (let k = 0; k < inputs.length; k++) {
    const num = new Float64Array(inputs[k].length);
    for (let i = 0; i < num.length; i++) {
      const keep = inputs[k][i];
      inputs[k][i] = keep + h;
      const lp = dot(f(inputs), up);
      inputs[k][i] = keep - h;
      const lm = dot(f(inputs), up);
      inputs[k][i] = keep;
      num[i] = (lp - lm) / (2 * h);
    }
    assertClose(num, grads[k], 1e-7, `${what}: finite differences of input ${k}`);
  }
}

Deno.test("nn references agree with finite differences", () => {
  const h = 5, rows = 3, eps = 1e-5;
  const x = Float64Array.from(rand(rows * h, 11));
  const w = Float64Array.from(rand(h, 12));
  const b = Float64Array.from(rand(h, 13));
  const up = Float64Array.from(rand(rows * h, 14));
  const ln = normRef(x, w, b, h, eps, up);
  fdCheck("layerNorm", [x, w, b], [ln.dx, ln.dw, ln.db], ([x, w, b]) => {
    return normRef(x, w, b, h, eps, up).y;
  }, up);
  const rn = normRef(x, w, null, h, eps, up);
  fdCheck("rmsNorm", [x, w], [rn.dx, rn.dw], ([x, w]) => normRef(x, w, null, h, eps, up).y, up);
  const u = Float64Array.from(rand(rows * h, 15, 0.05, 4));
  const sm = siluMulRef(x, u, up);
  fdCheck("siluMul", [x, u], [sm.dg, sm.du], ([g, u]) => siluMulRef(g, u, up).y, up);
  const xg = Float64Array.from(rand(rows * h, 16, 0.05, 4));
  fdCheck("geluTanh", [xg], [geluRef(xg, up).dx], ([x]) => geluRef(x, up).y, up);
});

async function checkNorm(kind: "layer" | "rms", shape: number[], seed: number, shift: number) {
  const g = await gpu();
  const h = shape[shape.length - 1];
  const n = shape.reduce((a, b) => a * b, 1);
  const xv = rand(n, seed).map((v) => v + shift);
  const wv = rand(h, seed + 1, 0.5, 2), bv = rand(h, seed + 2), upv = rand(n, seed + 3);
  const eps = kind === "layer" ? 1e-6 : 1e-5;
  const x = Tensor.from(g, xv, shape), w = Tensor.from(g, wv, [h]), b = Tensor.from(g, bv, [h]);
  for (const t of [x, w, b]) t.requiresGrad = true;
  const up = Tensor.from(g, upv, shape);
  const y = kind === "layer" ? layerNorm(x, w, b, eps) : rmsNorm(x, w, eps);
  if (y.shape.join() !== shape.join()) throw new Error(`shape [${y.shape}]`);
  y.backward(up);
  const ref = normRef(xv, wv, kind === "layer" ? bv : null, h, eps, upv);
  const what = `${kind}Norm [${shape}]`;
  assertClose(await y.read(), ref.y, TOL.f32, `${what} forward`);
  assertClose(await x.grad!.read(), ref.dx, TOL.f32Reduce, `${what} dx`);
  assertClose(await w.grad!.read(), ref.dw, TOL.f32Reduce, `${what} dw`);
  if (kind === "layer") assertClose(await b.grad!.read(), ref.db, TOL.f32Reduce, `${what} db`);
  else if (b.grad) throw new Error("rmsNorm gave an unused tensor a gradient");
  for (const t of [x, w, b, up, y]) t.dispose();
}

Deno.test("layerNorm / rmsNorm: forward and backward vs f64", GPU_TEST, async () => {
  // Awkward sizes; > 128 rows (two-level weight-gradient reduction); H = 4096; a mean offset.
  await checkNorm("layer", [3, 13, 67], 21, 0);
  await checkNorm("layer", [301, 33], 22, 5);
  await checkNorm("layer", [3, 4096], 23, -2);
  await checkNorm("rms", [3, 13, 67], 24, 0);
  await checkNorm("rms", [301, 33], 25, 0.5);
  await checkNorm("rms", [3, 4096], 26, 0);
});

Deno.test(
  "norms: only the inputs that need it get a gradient; bad shapes throw",
  GPU_TEST,
  async () => {
    const g = await gpu();
    const h = 19, rows = 7;
    const xv = rand(rows * h, 31), wv = rand(h, 32), upv = rand(rows * h, 33);
    const x = Tensor.from(g, xv, [rows, h]), w = Tensor.from(g, wv, [h]);
    w.requiresGrad = true; // frozen input, trainable weight
    const up = Tensor.from(g, upv, [rows, h]);
    const y = rmsNorm(x, w, 1e-6);
    y.backward(up);
    assertClose(await w.grad!.read(), normRef(xv, wv, null, h, 1e-6, upv).dw, TOL.f32Reduce);
    if (x.grad) throw new Error("frozen x got a gradient");
    const bad = Tensor.from(g, rand(h + 1, 34), [h + 1]);
    let msg = "";
    try {
      rmsNorm(x, bad, 1e-6);
    } catch (e) {
      msg = String(e);
    }
    if (!msg.includes("weight must be [19]")) throw new Error(`unexpected: ${msg}`);
    const none = noGrad(() => layerNorm(x, w, w, 1e-5));
    if (none.node) throw new Error("noGrad recorded a node");
    for (const t of [x, w, up, y, bad, none]) t.dispose();
  },
);

Deno.test("siluMul / geluTanh: forward and backward vs f64, extreme inputs", GPU_TEST, async () => {
  const g = await gpu();
  const n = 70_007; // > 256 workgroups, odd (7 · 10,001)
  const gv = rand(n, 41, 0.01, 6), uv = rand(n, 42), upv = rand(n, 43);
  const xv = rand(n, 44, 0.01, 6);
  // Extremes: tanh / exp arguments far beyond f32 range must not produce NaN.
  for (const [i, v] of [[0, 100], [1, -100], [2, 1e4], [3, -1e4], [4, 30], [5, -30]]) {
    gv[i] = v;
    xv[i] = v;
  }
  const gate = Tensor.from(g, gv, [n]), u = Tensor.from(g, uv, [n]);
  const x = Tensor.from(g, xv, [7, n / 7]);
  for (const t of [gate, u, x]) t.requiresGrad = true;
  const y1 = siluMul(gate, u);
  const y2 = geluTanh(x);
  // backward() takes ownership of the gradient it is given.
  y1.backward(Tensor.from(g, upv, [n]));
  y2.backward(Tensor.from(g, upv, [7, n / 7]));
  const r1 = siluMulRef(gv, uv, upv), r2 = geluRef(xv, upv);
  assertClose(await y1.read(), r1.y, TOL.f32, "siluMul forward");
  assertClose(await gate.grad!.read(), r1.dg, TOL.f32, "siluMul d gate");
  assertClose(await u.grad!.read(), r1.du, TOL.f32, "siluMul d up");
  const gy = await y2.read(), gdx = await x.grad!.read();
  assertClose(gy, r2.y, TOL.f32, "geluTanh forward");
  assertClose(gdx, r2.dx, TOL.f32, "geluTanh backward");
  // The extremes exactly: gelu(±1e4) = 1e4 / 0, slope 1 / 0.
  assertClose([gy[2], gy[3], gdx[2] / upv[2], gdx[3]], [1e4, 0, 1, 0], 0, "gelu extremes");
  let msg = "";
  try {
    siluMul(gate, x);
  } catch (e) {
    msg = String(e);
  }
  if (!msg.includes("differ in shape")) throw new Error(`unexpected: ${msg}`);
  for (const t of [gate, u, x, y1, y2]) t.dispose();
});

// ---- pixel shuffle ----

function shuffleRef(x: Arr, batch: number, s: number, d: number, r: number): Float64Array {
  const gs = Math.floor(s / r);
  const out = new Float64Array(batch * gs * gs * r * r * d);
  let k = 0;
  for (let b = 0; b < batch; b++) {
    for (let i = 0; i < gs; i++) {
      for (let j = 0; j < gs; j++) {
        for (let dy = 0; dy < r; dy++) {
          for (let dx = 0; dx < r; dx++) {
            const p = (i * r + dy) * s + (j * r + dx);
            for (let c = 0; c < d; c++) out[k++] = x[(b * s * s + p) * d + c];
          }
        }
      }
    }
  }
  return out;
}

// Gradient of Σ up ⊙ shuffle(x): the adjoint, built by scattering (an independent route).
function shuffleGradRef(up: Arr, batch: number, s: number, d: number, r: number): Float64Array {
  const idx = shuffleRef(
    Float64Array.from({ length: batch * s * s * d }, (_, i) => i),
    batch,
    s,
    d,
    r,
  );
  const gx = new Float64Array(batch * s * s * d);
  idx.forEach((src, k) => gx[src] += up[k]);
  return gx;
}

Deno.test("pixelShuffle: FACTS §4 vector, crop, fixture shape, backward", GPU_TEST, async () => {
  const g = await gpu();
  // FACTS §4: s = 6, D = 3, r = 2, x[p, d] = 3p + d.
  const v = Float32Array.from({ length: 36 * 3 }, (_, i) => i);
  const x = Tensor.from(g, v, [1, 36, 3]);
  const y = pixelShuffle(x, 2);
  if (y.shape.join() !== "1,9,12") throw new Error(`shape [${y.shape}]`);
  const got = await y.read();
  assertClose(got.subarray(0, 12), [0, 1, 2, 3, 4, 5, 18, 19, 20, 21, 22, 23], 0, "token 0");
  assertClose(got.subarray(12, 24), [6, 7, 8, 9, 10, 11, 24, 25, 26, 27, 28, 29], 0, "token 1");
  assertClose(got, shuffleRef(v, 1, 6, 3, 2), 0, "s=6 all tokens");
  x.dispose();
  y.dispose();
  // Cropped (s = 5, r = 2), fixture-like (s = 4, r = 2), r = 3 with crop (s = 7), batch 3.
  for (const [batch, s, d, r] of [[3, 5, 7, 2], [2, 4, 16, 2], [3, 7, 5, 3]]) {
    const n = batch * s * s * d;
    const xv = rand(n, 50 + s);
    const xt = Tensor.from(g, xv, [batch, s * s, d]);
    xt.requiresGrad = true;
    const gs = Math.floor(s / r);
    const upv = rand(batch * gs * gs * r * r * d, 60 + s);
    const up = Tensor.from(g, upv, [batch, gs * gs, r * r * d]);
    const yt = pixelShuffle(xt, r);
    yt.backward(up);
    const what = `pixelShuffle B=${batch} s=${s} D=${d} r=${r}`;
    assertClose(await yt.read(), shuffleRef(xv, batch, s, d, r), 0, `${what} forward`);
    const gx = await xt.grad!.read();
    assertClose(gx, shuffleGradRef(upv, batch, s, d, r), 0, `${what} backward`);
    if (s % r !== 0) {
      // The last grid column of row 0 lies outside the crop: its gradient is exactly 0.
      const p = s - 1;
      if (gx[p * d] !== 0) throw new Error(`${what}: cropped patch got gradient ${gx[p * d]}`);
    }
    for (const t of [xt, up, yt]) t.dispose();
  }
  const bad = Tensor.from(g, rand(10 * 2, 70), [1, 10, 2]);
  let msg = "";
  try {
    pixelShuffle(bad, 2);
  } catch (e) {
    msg = String(e);
  }
  if (!msg.includes("square grid")) throw new Error(`unexpected: ${msg}`);
  bad.dispose();
});
