// AdamW and gradient clipping against a float64 re-implementation of torch.optim.AdamW +
// clip_grad_norm_ (fixture README "Training sequences" rules).

import { assertClose, gpu, GPU_TEST, rand, TOL } from "./util.ts";
import {
  type AdamWParams,
  adamwStep,
  clipCoefficient,
  setBindingLimitForTests,
  sumOfSquares,
  Tensor,
} from "../src/tensor/mod.ts";

const MAX_NORM = 1.0;

/** torch clip_grad_norm_ coefficient from f64 gradients. */
function clipRef(grads: ArrayLike<number>[]): number {
  let s = 0;
  for (const g of grads) for (let i = 0; i < g.length; i++) s += g[i] * g[i];
  return Math.min(1, MAX_NORM / (Math.sqrt(s) + 1e-6));
}

/** One torch AdamW step in f64, in place. */
function adamwRef(
  p: Float64Array,
  g: ArrayLike<number>,
  m: Float64Array,
  v: Float64Array,
  hp: AdamWParams,
  c: number,
): void {
  const { lr, beta1, beta2, eps, weightDecay, step } = hp;
  const bc1 = 1 - beta1 ** step, bc2 = 1 - beta2 ** step;
  for (let i = 0; i < p.length; i++) {
    const gc = g[i] * c;
    m[i] = beta1 * m[i] + (1 - beta1) * gc;
    v[i] = beta2 * v[i] + (1 - beta2) * gc * gc;
    p[i] = p[i] * (1 - lr * weightDecay) - (lr / bc1) * m[i] / (Math.sqrt(v[i] / bc2) + eps);
  }
}

Deno.test("adamw reference: first step is lr·sign(g) after decay", () => {
  const p = Float64Array.from([1, -2, 3]), m = new Float64Array(3), v = new Float64Array(3);
  const hp = { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 0, weightDecay: 0.5, step: 1 };
  adamwRef(p, [0.3, -4, 1e-3], m, v, hp, 1);
  assertClose(p, [1 * 0.95 - 0.1, -2 * 0.95 + 0.1, 3 * 0.95 - 0.1], 1e-14, "reference step 1");
});

Deno.test("clipCoefficient: scale and finite flag on the GPU", GPU_TEST, async () => {
  const g = await gpu();
  const cases = [0, 0.25, 1, 4, 1e6, 1e-30, Infinity, NaN, 3.4e38];
  for (const s of cases) {
    const t = Tensor.from(g, [s], []);
    const c = clipCoefficient(t, MAX_NORM);
    const got = await c.read();
    const finite = Number.isFinite(Math.fround(s));
    if (got[1] !== (finite ? 1 : 0)) throw new Error(`sumsq ${s}: finite flag ${got[1]}`);
    if (finite) {
      const want = Math.min(1, MAX_NORM / (Math.sqrt(Math.fround(s)) + 1e-6));
      assertClose([got[0]], [want], 1e-6, `coefficient for sumsq ${s}`);
    }
    t.dispose();
    c.dispose();
  }
  const bad = Tensor.from(g, [1, 2], [2]);
  let msg = "";
  try {
    clipCoefficient(bad, 1);
  } catch (e) {
    msg = String(e);
  }
  if (!msg.includes("sumsq must be f32 with 1 element")) throw new Error(`unexpected: ${msg}`);
  bad.dispose();
});

interface Param {
  shape: number[];
  p: Tensor;
  m: Tensor;
  v: Tensor;
  rp: Float64Array;
  rm: Float64Array;
  rv: Float64Array;
  p0: Float64Array;
}

async function runSequence(limit: number | null): Promise<void> {
  const g = await gpu();
  // Awkward sizes: not multiples of 4 (vec4 tails), one of them spanning many windows when the
  // binding limit is forced down.
  const shapes = [[7, 13], [1003], [3, 3001]];
  const params: Param[] = shapes.map((shape, k) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const pv = rand(n, 100 + k);
    return {
      shape,
      p: Tensor.from(g, pv, shape),
      m: Tensor.from(g, new Float32Array(n), shape),
      v: Tensor.from(g, new Float32Array(n), shape),
      rp: Float64Array.from(pv),
      rm: new Float64Array(n),
      rv: new Float64Array(n),
      p0: Float64Array.from(pv),
    };
  });
  // Steps: lr changes each time; step 2 has a NaN gradient, step 4 an infinite one (both skipped:
  // the step counter does not advance).
  const plan = [
    { lr: 1e-2, bad: null },
    { lr: 2e-2, bad: NaN },
    { lr: 5e-3, bad: null },
    { lr: 3e-2, bad: Infinity },
    { lr: 2e-2, bad: null },
  ];
  setBindingLimitForTests(limit);
  try {
    let t = 0;
    for (const [s, { lr, bad }] of plan.entries()) {
      // Gradients of norm ~ 40: clipping is active.
      const gv = params.map((q, k) => rand(q.rp.length, 1000 * s + k, 0.05, 1.5));
      if (bad !== null) gv[1][517] = bad;
      const grads = gv.map((x, k) => Tensor.from(g, x, params[k].shape));
      const sumsq = sumOfSquares(grads);
      const coef = clipCoefficient(sumsq, MAX_NORM);
      const before = bad === null ? null : await Promise.all(
        params.map(async (q) => [await q.p.read(), await q.m.read(), await q.v.read()]),
      );
      const step = bad === null ? ++t : t + 1;
      const c = clipRef(gv);
      if (bad === null && !(c < 0.1)) throw new Error(`clipping inactive (coefficient ${c})`);
      params.forEach((q, k) => {
        const hp = {
          lr,
          beta1: 0.9,
          beta2: 0.999,
          // eps large enough that its placement (outside the sqrt) matters at this tolerance
          eps: 1e-6,
          weightDecay: q.shape.length >= 2 ? 0.01 : 0,
          step,
        };
        adamwStep(q.p, grads[k], q.m, q.v, hp, coef);
        if (bad === null) adamwRef(q.rp, gv[k], q.rm, q.rv, hp, c);
      });
      if (before) {
        // A non-finite gradient anywhere: every tensor is left bit for bit as it was.
        for (const [k, q] of params.entries()) {
          assertClose(await q.p.read(), before[k][0], 0, `step ${s}: p ${k} after skipped step`);
          assertClose(await q.m.read(), before[k][1], 0, `step ${s}: m ${k} after skipped step`);
          assertClose(await q.v.read(), before[k][2], 0, `step ${s}: v ${k} after skipped step`);
        }
      }
      for (const x of [...grads, sumsq, coef]) x.dispose();
    }
  } finally {
    setBindingLimitForTests(null);
  }
  for (const [k, q] of params.entries()) {
    const what = `param ${k} [${q.shape}] (limit ${limit})`;
    const p = await q.p.read();
    // p to 1e-6; the update p − p0 to 1e-4 of its size: storing p in f32 rounds it by up to
    // ½ ulp(p) each step, ~1e-5 of a 1e-2 update (the fixture README's ~1e-4 rule).
    assertClose(p, q.rp, 1e-6, `${what}: p`);
    const du = p.map((x, i) => x - q.p0[i]);
    const want = q.rp.map((x, i) => x - q.p0[i]);
    assertClose(du, want, 1e-4, `${what}: update`);
    assertClose(await q.m.read(), q.rm, TOL.f32, `${what}: m`);
    assertClose(await q.v.read(), q.rv, TOL.f32, `${what}: v`);
    for (const x of [q.p, q.m, q.v]) x.dispose();
  }
}

Deno.test(
  "adamwStep: 3 clipped steps + 2 non-finite (skipped) steps vs f64",
  GPU_TEST,
  async () => {
    await runSequence(null);
  },
);

Deno.test("adamwStep: same sequence through small binding windows", GPU_TEST, async () => {
  // 4 KiB windows (1024 elements): [3, 3001] spans 9 windows, the last ending in a vec4 tail.
  await runSequence(4096);
});

Deno.test("adamwStep: without coef uses g as it is; bad arguments throw", GPU_TEST, async () => {
  const g = await gpu();
  const n = 37;
  const pv = rand(n, 7), gv = rand(n, 8, 0.05, 10);
  const p = Tensor.from(g, pv, [n]), gr = Tensor.from(g, gv, [n]);
  const m = Tensor.from(g, new Float32Array(n), [n]), v = Tensor.from(g, new Float32Array(n), [n]);
  const rp = Float64Array.from(pv), rm = new Float64Array(n), rv = new Float64Array(n);
  for (let step = 1; step <= 2; step++) {
    const hp = { lr: 0.01, beta1: 0.8, beta2: 0.99, eps: 1e-6, weightDecay: 0.1, step };
    adamwStep(p, gr, m, v, hp);
    adamwRef(rp, gv, rm, rv, hp, 1);
  }
  assertClose(await p.read(), rp, TOL.f32, "p without clipping");
  assertClose(await v.read(), rv, TOL.f32, "v without clipping");
  const hp = { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, step: 1 };
  const short = Tensor.from(g, rand(n - 1, 9), [n - 1]);
  const expectThrow = (fn: () => void, text: string) => {
    let msg = "";
    try {
      fn();
    } catch (e) {
      msg = String(e);
    }
    if (!msg.includes(text)) throw new Error(`expected "${text}", got "${msg}"`);
  };
  expectThrow(() => adamwStep(p, short, m, v, hp), "g must be f32 with 37 element(s)");
  expectThrow(() => adamwStep(p, gr, m, v, { ...hp, step: 0 }), "bad step");
  expectThrow(() => adamwStep(p, gr, m, m, hp), "must be distinct");
  expectThrow(() => adamwStep(p, gr, m, v, { ...hp, beta1: 1 }), "bad beta1");
  for (const t of [p, gr, m, v, short]) t.dispose();
});
