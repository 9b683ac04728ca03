// linearCrossEntropy vs a float64 reference (itself checked by finite differences): f32/f16/bf16
// weights, awkward sizes, several chunks and W windows, ignore index, a single token, and a real
// size [151936, 896] head (bf16, and f32 larger than one storage binding with dW).

import { assertClose, gpu, GPU_TEST, rand, rng, TOL } from "./util.ts";
import {
  bf16BitsToF32,
  type DType,
  type LinearCEOptions,
  linearCeWindows,
  linearCrossEntropy,
  roundBf16,
  roundF16,
  scale,
  setBindingLimitForTests,
  Tensor,
  tidy,
} from "../src/tensor/mod.ts";

interface Ref {
  loss: number;
  dh: Float64Array;
  dW: Float64Array;
}

/** f64 loss = mean over counted i of lse(h_i·Wᵀ) − h_i·w_t, and its gradients. */
function reference(
  h: ArrayLike<number>,
  w: ArrayLike<number>,
  t: ArrayLike<number>,
  N: number,
  H: number,
  V: number,
): Ref {
  let count = 0;
  for (let i = 0; i < N; i++) if (t[i] !== -100) count++;
  const dh = new Float64Array(N * H), dW = new Float64Array(V * H);
  let loss = 0;
  const z = new Float64Array(V);
  for (let i = 0; i < N; i++) {
    if (t[i] === -100) continue;
    let m = -Infinity;
    for (let v = 0; v < V; v++) {
      let d = 0;
      for (let k = 0; k < H; k++) d += h[i * H + k] * w[v * H + k];
      z[v] = d;
      m = Math.max(m, d);
    }
    let s = 0;
    for (let v = 0; v < V; v++) s += Math.exp(z[v] - m);
    const lse = m + Math.log(s);
    loss += lse - z[t[i]];
    for (let v = 0; v < V; v++) {
      const g = (Math.exp(z[v] - lse) - (v === t[i] ? 1 : 0)) / count;
      for (let k = 0; k < H; k++) {
        dh[i * H + k] += g * w[v * H + k];
        dW[v * H + k] += g * h[i * H + k];
      }
    }
  }
  return { loss: count ? loss / count : 0, dh, dW };
}

function targetsFor(N: number, V: number, seed: number, ignore: number[] = []): Int32Array {
  const r = rng(seed);
  const t = new Int32Array(N);
  for (let i = 0; i < N; i++) t[i] = Math.floor(r() * V);
  for (const i of ignore) t[i] = -100;
  return t;
}

Deno.test("linear_ce: the f64 reference matches finite differences", () => {
  const N = 4, H = 6, V = 11;
  const h = Array.from(rand(N * H, 11, 0.1, 1.5));
  const w = Array.from(rand(V * H, 12, 0.1, 1.5));
  const t = targetsFor(N, V, 13, [2]);
  const ref = reference(h, w, t, N, H, V);
  const eps = 1e-6;
  const fd = (x: number[], j: number) => {
    const keep = x[j];
    x[j] = keep + eps;
    const up = reference(h, w, t, N, H, V).loss;
    x[j] = keep - eps;
    const down = reference(h, w, t, N, H, V).loss;
    x[j] = keep;
    return (up - down) / (2 * eps);
  };
  const numH = h.map((_, j) => fd(h, j));
  const numW = w.map((_, j) => fd(w, j));
  assertClose(numH, ref.dh, 1e-7, "dh vs finite differences");
  assertClose(numW, ref.dW, 1e-7, "dW vs finite differences");
  // the ignored row gets no gradient
  assertClose(ref.dh.subarray(2 * H, 3 * H), new Float64Array(H), 0, "ignored row");
});

/** Run the op (loss · upstream) and return the loss and both gradients. */
async function runOp(
  hv: Float32Array,
  wv: Float32Array,
  tv: Int32Array,
  shape: { N: number; H: number; V: number },
  dtype: DType,
  opts: LinearCEOptions,
  upstream: number,
) {
  const g = await gpu();
  const { N, H, V } = shape;
  const h = Tensor.from(g, hv, [N, H]);
  const w = Tensor.from(g, wv, [V, H], dtype);
  const t = Tensor.from(g, tv, [N], "i32");
  h.requiresGrad = true;
  w.requiresGrad = true;
  const ce = tidy(() => linearCrossEntropy(h, w, t, opts));
  const lossV = await ce.item();
  const scaled = tidy(() => scale(ce, upstream));
  scaled.backward();
  // the gradients are the buffers the forward filled, handed over without a copy
  if (h.grad!.storage.refs !== 1 || w.grad!.storage.refs !== 1) throw new Error("shared grad");
  const dh = await h.grad!.read();
  const dW = await w.grad!.read();
  for (const x of [h, w, t, ce, scaled]) x.dispose();
  return { loss: lossV, dh, dW };
}

async function checkAgainstReference(
  dtype: DType,
  shape: { N: number; H: number; V: number },
  optsList: LinearCEOptions[],
  ignore: number[],
  seed: number,
) {
  const { N, H, V } = shape;
  const hv = rand(N * H, seed, 0.05, 1);
  const wv = rand(V * H, seed + 1, 0.05, 0.6);
  const round = dtype === "bf16" ? roundBf16 : dtype === "f16" ? roundF16 : (x: number) => x;
  const wr = wv.map(round); // what the GPU holds
  const tv = targetsFor(N, V, seed + 2, ignore);
  const ref = reference(hv, wr, tv, N, H, V);
  const up = 2.5;
  for (const opts of optsList) {
    const what = `${dtype} N=${N} H=${H} V=${V} ${JSON.stringify(opts)}`;
    const got = await runOp(hv, wv, tv, shape, dtype, opts, up);
    assertClose([got.loss], [ref.loss], TOL.f32Reduce, `${what}: loss`);
    assertClose(got.dh, ref.dh.map((x) => x * up), 1e-4, `${what}: dh`);
    assertClose(got.dW, ref.dW.map((x) => x * up), 1e-4, `${what}: dW`);
  }
}

Deno.test("linear_ce: f32 weights, awkward sizes, chunks and windows", GPU_TEST, async () => {
  // N = 37 (not a multiple of 8), H = 36 (a partial 64-column group), V = 1003 (not a multiple
  // of 4, 8 or 256). windowBytes 40,000 → W windows of 276 rows, the last one 175 rows.
  const V = 1003, H = 36;
  const wins = linearCeWindows(
    V,
    H * 4,
    40_000,
    (await gpu()).limits.minStorageBufferOffsetAlignment,
  );
  if (wins.length < 3 || wins[wins.length - 1].rows % 4 === 0) {
    throw new Error(`windowing setup: ${JSON.stringify(wins)}`);
  }
  await checkAgainstReference(
    "f32",
    { N: 37, H, V },
    [
      {},
      { chunk: 16, windowBytes: 40_000 },
    ],
    [3, 17, 36],
    21,
  );
});

Deno.test("linear_ce: the shared binding-limit test hook windows W and dW", GPU_TEST, async () => {
  // 8 KiB bindings: a bf16 W [300, 64] (38 KiB) and its f32 dW run through row windows without
  // the windowBytes option.
  setBindingLimitForTests(8_192);
  try {
    await checkAgainstReference("bf16", { N: 21, H: 64, V: 300 }, [{ chunk: 9 }], [2], 61);
  } finally {
    setBindingLimitForTests(null);
  }
});

Deno.test("linear_ce: f16 and bf16 weights (dW in f32)", GPU_TEST, async () => {
  await checkAgainstReference(
    "bf16",
    { N: 21, H: 64, V: 300 },
    [{}, {
      chunk: 9,
      windowBytes: 8_192,
    }],
    [0],
    31,
  );
  await checkAgainstReference("f16", { N: 21, H: 64, V: 300 }, [{ windowBytes: 8_192 }], [20], 41);
});

Deno.test("linear_ce: ignore index, all ignored, one token, no-grad path", GPU_TEST, async () => {
  const g = await gpu();
  const N = 10, H = 16, V = 70;
  const hv = rand(N * H, 51), wv = rand(V * H, 52, 0.05, 0.5);
  // all ignored: loss 0, gradients 0
  const all = new Int32Array(N).fill(-100);
  const got = await runOp(hv, wv, all, { N, H, V }, "f32", {}, 1);
  assertClose([got.loss], [0], 0, "all ignored: loss");
  assertClose(got.dh, new Float32Array(N * H), 0, "all ignored: dh");
  assertClose(got.dW, new Float32Array(V * H), 0, "all ignored: dW");
  // a single token
  const one = new Int32Array([V - 1]);
  const ref1 = reference(hv.subarray(0, H), wv, one, 1, H, V);
  const got1 = await runOp(hv.slice(0, H), wv, one, { N: 1, H, V }, "f32", {}, 1);
  assertClose([got1.loss], [ref1.loss], TOL.f32Reduce, "one token: loss");
  assertClose(got1.dh, ref1.dh, 1e-4, "one token: dh");
  assertClose(got1.dW, ref1.dW, 1e-4, "one token: dW");
  // a one-row head (bf16, 8 bytes): the loss is 0, and so are the gradients
  const tiny = await runOp(
    hv.slice(0, 8),
    wv.slice(0, 4),
    new Int32Array([0, 0]),
    {
      N: 2,
      H: 4,
      V: 1,
    },
    "bf16",
    {},
    1,
  );
  assertClose([tiny.loss, ...tiny.dh, ...tiny.dW], new Float32Array(13), 0, "V = 1");
  // forward only (no input requires grad): online logsumexp without a tile, several chunks
  const tv = targetsFor(N, V, 53, [1, 2]);
  const ref = reference(hv, wv, tv, N, H, V);
  const h = Tensor.from(g, hv, [N, H]);
  const w = Tensor.from(g, wv, [V, H]);
  const t = Tensor.from(g, tv, [N], "i32");
  for (const opts of [{}, { chunk: 3, windowBytes: 1024 }]) {
    const l = linearCrossEntropy(h, w, t, opts);
    if (l.node) throw new Error("no-grad call recorded a node");
    assertClose([await l.item()], [ref.loss], TOL.f32Reduce, `forward ${JSON.stringify(opts)}`);
    l.dispose();
  }
  // an out-of-range target poisons the loss
  const bad = Tensor.from(g, [0, V, ...new Array(N - 2).fill(1)], [N], "i32");
  const lb = linearCrossEntropy(h, w, bad);
  if (!Number.isNaN(await lb.item())) throw new Error("target V should give a NaN loss");
  for (const x of [h, w, t, bad, lb]) x.dispose();
});

Deno.test("linear_ce: more than 65,535 workgroups (a padded 2-D grid)", GPU_TEST, async () => {
  // 1001 token blocks × 67 vocabulary groups = 67,067 logits workgroups → a 2 × 33,534 grid
  const g = await gpu();
  // The padding workgroup must not write partials (it would land on tokens 1..8, slots 0..7):
  // only those tokens count, and vocabulary rows 0..7 (slot 0) hold nearly all their mass.
  const N = 8008, H = 4, V = 17000;
  const hv = rand(N * H, 91), wv = rand(V * H, 92);
  for (let i = 0; i < 10 * H; i++) hv[i] = Math.abs(hv[i]) + 0.5;
  wv.fill(5, 0, 8 * H);
  const tv = targetsFor(
    N,
    V,
    93,
    Array.from({ length: N }, (_, i) => i).filter((i) => i < 1 || i > 8),
  );
  const ref = reference(hv, wv, tv, N, H, V);
  const h = Tensor.from(g, hv, [N, H]);
  const w = Tensor.from(g, wv, [V, H]);
  const t = Tensor.from(g, tv, [N], "i32");
  const l = linearCrossEntropy(h, w, t, { chunk: N });
  assertClose([await l.item()], [ref.loss], TOL.f32Reduce, "loss");
  for (const x of [h, w, t, l]) x.dispose();
});

Deno.test("linear_ce: clear errors for bad input", GPU_TEST, async () => {
  const g = await gpu();
  const h = Tensor.from(g, rand(2 * 8, 61), [2, 8]);
  const w = Tensor.from(g, rand(5 * 8, 62), [5, 8]);
  const t = Tensor.from(g, [1, 2], [2], "i32");
  const expect = (f: () => unknown, msg: string) => {
    try {
      f();
    } catch (e) {
      if (!String(e).includes(msg)) throw new Error(`expected "${msg}", got ${e}`);
      return;
    }
    throw new Error(`expected an error "${msg}"`);
  };
  const w6 = Tensor.from(g, rand(5 * 6, 63), [5, 6]);
  const h6 = Tensor.from(g, rand(2 * 6, 64), [2, 6]);
  const t3 = Tensor.from(g, [1, 2, 3], [3], "i32");
  const tf = Tensor.from(g, [1, 2], [2]);
  expect(() => linearCrossEntropy(h, w6, t), "w must be [V, 8]");
  expect(() => linearCrossEntropy(h, w, t3), "targets must be i32 [2]");
  expect(() => linearCrossEntropy(h, w, tf), "targets must be i32 [2]");
  expect(() => linearCrossEntropy(h6, w6, t), "multiple of 4");
  expect(() => linearCrossEntropy(h, w, t, { chunk: 0 }), "chunk must be a positive integer");
  for (const x of [h, w, t, w6, h6, t3, tf]) x.dispose();
});

// ---- real size: the Qwen2.5 head [151936, 896] at a few tokens ----

const VR = 151936, HR = 896;

/** Fill a [VR, HR] head with bf16 bits (uniform ±[0.002, 0.04]) from a fast PRNG. */
function realHeadBf16(seed: number): Uint16Array {
  const bits = new Uint16Array(VR * HR);
  const f = new Float32Array(1), u = new Uint32Array(f.buffer);
  let s = seed >>> 0;
  for (let i = 0; i < bits.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const x = 0.002 + 0.038 * (s >>> 8) / 16777216;
    f[0] = s & 1 ? -x : x;
    bits[i] = u[0] >>> 16;
  }
  return bits;
}

/** Reference loss, dh and dW rows `rows` streaming over the rows of a head (row → f32 values). */
function streamingReference(
  hv: Float32Array,
  N: number,
  t: Int32Array,
  row: (v: number, out: Float32Array) => void,
  rows: number[],
) {
  const z = new Float64Array(N * VR);
  const wr = new Float32Array(HR);
  for (let v = 0; v < VR; v++) {
    row(v, wr);
    for (let i = 0; i < N; i++) {
      let d = 0;
      for (let k = 0; k < HR; k++) d += hv[i * HR + k] * wr[k];
      z[i * VR + v] = d;
    }
  }
  let count = 0, loss = 0;
  const lse = new Float64Array(N);
  for (let i = 0; i < N; i++) {
    if (t[i] === -100) continue;
    count++;
    let m = -Infinity;
    for (let v = 0; v < VR; v++) m = Math.max(m, z[i * VR + v]);
    let s = 0;
    for (let v = 0; v < VR; v++) s += Math.exp(z[i * VR + v] - m);
    lse[i] = m + Math.log(s);
    loss += lse[i] - z[i * VR + t[i]];
  }
  const G = (i: number, v: number) =>
    t[i] === -100 ? 0 : (Math.exp(z[i * VR + v] - lse[i]) - (v === t[i] ? 1 : 0)) / count;
  const dh = new Float64Array(N * HR);
  for (let v = 0; v < VR; v++) {
    row(v, wr);
    for (let i = 0; i < N; i++) {
      const gi = G(i, v);
      if (gi === 0) continue;
      for (let k = 0; k < HR; k++) dh[i * HR + k] += gi * wr[k];
    }
  }
  const dW = rows.map((v) => {
    const r = new Float64Array(HR);
    for (let i = 0; i < N; i++) {
      const gi = G(i, v);
      for (let k = 0; k < HR; k++) r[k] += gi * hv[i * HR + k];
    }
    return r;
  });
  return { loss: loss / count, dh, dW };
}

Deno.test("linear_ce: real-size bf16 head [151936, 896], loss and dh", GPU_TEST, async () => {
  const g = await gpu();
  const N = 5;
  const bits = realHeadBf16(7);
  const hv = rand(N * HR, 71, 0.05, 1);
  const tv = new Int32Array([3, VR - 1, -100, 151000, 77777]);
  const u = new Uint32Array(HR);
  const rowF = new Float32Array(u.buffer);
  const ref = streamingReference(hv, N, tv, (v, out) => {
    for (let k = 0; k < HR; k++) u[k] = bits[v * HR + k] << 16;
    out.set(rowF);
  }, []);
  const w = Tensor.fromBytes(g, new Uint8Array(bits.buffer), [VR, HR], "bf16");
  const h = Tensor.from(g, hv, [N, HR]);
  h.requiresGrad = true;
  const t = Tensor.from(g, tv, [N], "i32");
  const loss = linearCrossEntropy(h, w, t);
  loss.backward();
  assertClose([await loss.item()], [ref.loss], TOL.f32Reduce, "bf16 real: loss");
  assertClose(await h.grad!.read(), ref.dh, 1e-4, "bf16 real: dh");
  if (bf16BitsToF32(bits[0]) === 0) throw new Error("generator produced a zero weight");
  for (const x of [w, h, t, loss]) x.dispose();
});

Deno.test(
  "linear_ce: real-size f32 head (> one binding), loss, dh and dW rows",
  GPU_TEST,
  async () => {
    const g = await gpu();
    const N = 3;
    const bits = realHeadBf16(9);
    // f32 weights that are exactly the bf16 values (generated once, widened on the CPU)
    const wv = new Float32Array(VR * HR);
    const wu = new Uint32Array(wv.buffer);
    for (let i = 0; i < wu.length; i++) wu[i] = bits[i] << 16;
    const hv = rand(N * HR, 81, 0.05, 1);
    const tv = new Int32Array([42, -100, VR - 2]);
    const rows = [0, 42, 65_000, VR - 2, VR - 1];
    const ref = streamingReference(
      hv,
      N,
      tv,
      (v, out) => out.set(wv.subarray(v * HR, v * HR + HR)),
      rows,
    );
    const w = Tensor.from(g, wv, [VR, HR]);
    if (w.bytes <= g.limits.maxStorageBufferBindingSize) {
      throw new Error("head fits one binding");
    }
    w.requiresGrad = true;
    const h = Tensor.from(g, hv, [N, HR]);
    h.requiresGrad = true;
    const t = Tensor.from(g, tv, [N], "i32");
    const loss = linearCrossEntropy(h, w, t);
    loss.backward();
    assertClose([await loss.item()], [ref.loss], TOL.f32Reduce, "f32 real: loss");
    assertClose(await h.grad!.read(), ref.dh, 1e-4, "f32 real: dh");
    for (let j = 0; j < rows.length; j++) {
      const raw = await g.read(w.grad!.storage.buffer, rows[j] * HR * 4, HR * 4);
      assertClose(new Float32Array(raw), ref.dW[j], 1e-4, `f32 real: dW row ${rows[j]}`);
    }
    for (const x of [w, h, t, loss]) {
      x.dispose();
    }
  },
);
