// softmax() and rope(): forward and backward against float64 references (softmax: short rows,
// single-element rows, long rows on the workgroup-per-row path, large and -inf logits; rope: the
// HF rotate-half formula with f32 inv_freq and angles, large positions, two thetas), plus
// finite-difference checks of the references.

import assert from "node:assert/strict";
import { assertClose, gpu, GPU_TEST, rand, rng } from "./util.ts";
import { rope, ropeInvFreq, softmax, Tensor, tidy } from "../src/tensor/mod.ts";

// ---- softmax ----

function refSoftmax(x: ArrayLike<number>, n: number): Float64Array {
  const y = new Float64Array(x.length);
  for (let r = 0; r < x.length / n; r++) {
    let m = -Infinity;
    for (let j = 0; j < n; j++) m = Math.max(m, x[r * n + j]);
    let l = 0;
    for (let j = 0; j < n; j++) l += Math.exp(x[r * n + j] - m);
    for (let j = 0; j < n; j++) y[r * n + j] = Math.exp(x[r * n + j] - m) / l;
  }
  return y;
}

// dx = y ⊙ (dy - Σ dy·y), per row.
function refSoftmaxGrad(y: ArrayLike<number>, dy: ArrayLike<number>, n: number): Float64Array {
  const dx = new Float64Array(y.length);
  for (let r = 0; r < y.length / n; r++) {
    let d = 0;
    for (let j = 0; j < n; j++) d += y[r * n + j] * dy[r * n + j];
    for (let j = 0; j < n; j++) dx[r * n + j] = y[r * n + j] * (dy[r * n + j] - d);
  }
  return dx;
}

Deno.test("softmax reference: finite differences of the f64 backward", () => {
  const n = 5, x = Float64Array.from(rand(3 * n, 1, 0.1, 3)), w = Float64Array.from(rand(3 * n, 2));
  const grad = refSoftmaxGrad(refSoftmax(x, n), w, n);
  const fd = new Float64Array(x.length), h = 1e-6;
  const loss = () => refSoftmax(x, n).reduce((a, y, i) => a + y * w[i], 0);
  for (let i = 0; i < x.length; i++) {
    const x0 = x[i];
    x[i] = x0 + h;
    const up = loss();
    x[i] = x0 - h;
    const dn = loss();
    x[i] = x0;
    fd[i] = (up - dn) / (2 * h);
  }
  assertClose(grad, fd, 1e-7, "softmax finite differences");
});

Deno.test(
  "softmax: forward and backward vs f64, short, single and long rows",
  GPU_TEST,
  async () => {
    const g = await gpu();
    const cases: { shape: number[]; amp: number; what: string }[] = [
      { shape: [3, 5, 37], amp: 3, what: "rows of 37" },
      { shape: [7, 1], amp: 1, what: "rows of 1" },
      { shape: [130, 11], amp: 60, what: "large logits" },
      { shape: [2, 1500], amp: 4, what: "rows of 1500 (workgroup per row)" },
      { shape: [3, 4099], amp: 50, what: "rows of 4099, large logits" },
    ];
    for (const [ci, c] of cases.entries()) {
      const n = c.shape[c.shape.length - 1];
      const size = c.shape.reduce((a, b) => a * b, 1);
      const xv = rand(size, 10 + ci, 0.01, c.amp), gv = rand(size, 20 + ci);
      const x = Tensor.from(g, xv, c.shape);
      x.requiresGrad = true;
      const y = tidy(() => softmax(x));
      const got = await y.read();
      y.backward(Tensor.from(g, gv, c.shape));
      const want = refSoftmax(xv, n);
      assertClose(got, want, 1e-5, `${c.what}: y`);
      assertClose(await x.grad!.read(), refSoftmaxGrad(want, gv, n), 1e-5, `${c.what}: dx`);
      for (const t of [x, y]) t.dispose();
    }
  },
);

Deno.test("softmax: -inf entries get probability 0, errors", GPU_TEST, async () => {
  const g = await gpu();
  for (const n of [6, 1100]) {
    const xv = rand(2 * n, 30);
    for (let j = 0; j < 2 * n; j += 3) xv[j] = -Infinity;
    const y = await softmax(Tensor.from(g, xv, [2, n])).read();
    assertClose(y, refSoftmax(xv, n), 1e-5, `masked rows of ${n}`);
    for (let j = 0; j < 2 * n; j += 3) assert.equal(y[j], 0);
  }
  assert.throws(() => softmax(Tensor.empty(g, [3, 0])), /empty last dim/);
  assert.throws(() => softmax(Tensor.empty(g, [3, 4], "i32")), /f32/);
});

// ---- rope ----

interface RopeCase {
  B: number;
  T: number;
  H: number;
  D: number;
  theta: number;
  pos: Int32Array;
}

// HF form: emb = cat(freqs, freqs), out = x·cos(emb) + rotate_half(x)·sin(emb), with
// inv_freq = 1 / theta^(f32(2i)/D) and freqs = f32(pos) · inv_freq computed in float32.
// inverse = true applies the transposed (inverse) rotation.
function refRope(c: RopeCase, x: ArrayLike<number>, inverse = false): Float64Array {
  const { B, T, H, D } = c, half = D / 2;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) {
    inv[i] = Math.fround(1 / Math.fround(c.theta ** Math.fround((2 * i) / D)));
  }
  const out = new Float64Array(x.length);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const p = c.pos[b * T + t];
      const emb = Array.from({ length: D }, (_, d) => Math.fround(Math.fround(p) * inv[d % half]));
      for (let h = 0; h < H; h++) {
        const o = ((b * T + t) * H + h) * D;
        for (let d = 0; d < D; d++) {
          const rot = d < half ? -x[o + d + half] : x[o + d - half];
          const sin = inverse ? -Math.sin(emb[d]) : Math.sin(emb[d]);
          out[o + d] = x[o + d] * Math.cos(emb[d]) + rot * sin;
        }
      }
    }
  }
  return out;
}

Deno.test("rope reference: inv_freq recipe, finite differences of the backward", () => {
  // ropeInvFreq (used by the kernel) follows the same f32 recipe as the reference.
  const inv = ropeInvFreq(64, 1e6);
  assert.equal(inv[0], 1);
  assert.equal(inv[1], Math.fround(1 / Math.fround(1e6 ** Math.fround(2 / 64))));
  // The backward (inverse rotation applied to w) is the gradient of Σ w · rope(x).
  const c: RopeCase = { B: 1, T: 2, H: 2, D: 6, theta: 100, pos: Int32Array.from([3, 17]) };
  const x = Float64Array.from(rand(24, 40)), w = Float64Array.from(rand(24, 41));
  const grad = refRope(c, w, true);
  const fd = new Float64Array(24), h = 1e-6;
  const loss = () => refRope(c, x).reduce((a, y, i) => a + y * w[i], 0);
  for (let i = 0; i < 24; i++) {
    const x0 = x[i];
    x[i] = x0 + h;
    const up = loss();
    x[i] = x0 - h;
    const dn = loss();
    x[i] = x0;
    fd[i] = (up - dn) / (2 * h);
  }
  assertClose(grad, fd, 1e-7, "rope finite differences");
});

Deno.test("rope: forward and backward vs f64 (HF rotate-half)", GPU_TEST, async () => {
  const g = await gpu();
  const r = rng(50);
  const cases: RopeCase[] = [
    // Qwen2.5 theta, positions up to 4000, awkward T and H.
    {
      B: 2,
      T: 7,
      H: 3,
      D: 64,
      theta: 1e6,
      pos: Int32Array.from({ length: 14 }, () => Math.floor(r() * 4000)),
    },
    { B: 1, T: 5, H: 2, D: 16, theta: 1e4, pos: Int32Array.from([0, 1, 2, 3, 31999]) },
    { B: 1, T: 3, H: 1, D: 2, theta: 10, pos: Int32Array.from([5, 0, 9]) },
  ];
  for (const [ci, c] of cases.entries()) {
    const n = c.B * c.T * c.H * c.D;
    const xv = rand(n, 60 + ci), gv = rand(n, 70 + ci);
    const x = Tensor.from(g, xv, [c.B, c.T, c.H, c.D]);
    const pos = Tensor.from(g, c.pos, [c.B, c.T], "i32");
    x.requiresGrad = true;
    const y = tidy(() => rope(x, pos, c.theta));
    pos.dispose(); // saved for backward by the op
    assertClose(await y.read(), refRope(c, xv), 1e-5, `case ${ci}: forward`);
    y.backward(Tensor.from(g, gv, [c.B, c.T, c.H, c.D]));
    assertClose(await x.grad!.read(), refRope(c, gv, true), 1e-5, `case ${ci}: backward`);
    for (const t of [x, y]) t.dispose();
  }
});

Deno.test("rope: errors", GPU_TEST, async () => {
  const g = await gpu();
  const x = Tensor.empty(g, [1, 2, 3, 8]);
  const pos = Tensor.empty(g, [1, 2], "i32");
  assert.throws(() => rope(Tensor.empty(g, [1, 2, 3, 7]), pos, 1e4), /even/);
  assert.throws(() => rope(x, Tensor.empty(g, [1, 3], "i32"), 1e4), /positions/);
  assert.throws(() => rope(x, Tensor.empty(g, [1, 2]), 1e4), /positions/);
  assert.throws(() => rope(x, pos, 0), /theta/);
  assert.throws(() => rope(Tensor.empty(g, [2, 3, 8]), pos, 1e4), /\[B, T, H, D\]/);
});
