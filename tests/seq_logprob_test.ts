// sequenceLogProbs vs a float64 reference (itself checked by finite differences): sums and means
// per sequence, upstream gradients into h and W, several tiles, ignored and empty sequences,
// bf16 heads, and the no-gradient path.

import { assertClose, gpu, GPU_TEST, rand, rng, TOL } from "./util.ts";
import { mul, noGrad, roundBf16, sequenceLogProbs, sum, Tensor, tidy } from "../src/tensor/mod.ts";

interface Ref {
  out: Float64Array;
  dh: Float64Array;
  dW: Float64Array;
}

/** f64: out[s] = Σ (mean) log softmax(h_i·Wᵀ)[t_i]; gradients of Σ_s up[s]·out[s]. */
function reference(
  h: ArrayLike<number>,
  w: ArrayLike<number>,
  t: ArrayLike<number>,
  seg: ArrayLike<number>,
  S: number,
  dims: { N: number; H: number; V: number },
  average: boolean,
  up: ArrayLike<number>,
): Ref {
  const { N, H, V } = dims;
  const cnt = new Float64Array(S);
  for (let i = 0; i < N; i++) if (t[i] !== -100) cnt[seg[i]]++;
  const out = new Float64Array(S), dh = new Float64Array(N * H), dW = new Float64Array(V * H);
  const z = new Float64Array(V);
  for (let i = 0; i < N; i++) {
    if (t[i] === -100) continue;
    const s = seg[i];
    let m = -Infinity;
    for (let v = 0; v < V; v++) {
      let d = 0;
      for (let k = 0; k < H; k++) d += h[i * H + k] * w[v * H + k];
      z[v] = d;
      m = Math.max(m, d);
    }
    let e = 0;
    for (let v = 0; v < V; v++) e += Math.exp(z[v] - m);
    const lse = m + Math.log(e);
    const div = average ? cnt[s] : 1;
    out[s] += (z[t[i]] - lse) / div;
    const a = up[s] / div;
    for (let v = 0; v < V; v++) {
      const g = a * ((v === t[i] ? 1 : 0) - Math.exp(z[v] - lse));
      for (let k = 0; k < H; k++) {
        dh[i * H + k] += g * w[v * H + k];
        dW[v * H + k] += g * h[i * H + k];
      }
    }
  }
  return { out, dh, dW };
}

function problem(N: number, V: number, S: number, seed: number) {
  const r = rng(seed);
  const t = new Int32Array(N), seg = new Int32Array(N);
  for (let i = 0; i < N; i++) {
    t[i] = r() < 0.25 ? -100 : Math.floor(r() * V);
    seg[i] = t[i] === -100 ? -1 : Math.floor(r() * S); // not sorted: the op sorts
  }
  return { t, seg };
}

Deno.test("seq_logprob: the f64 reference matches finite differences", () => {
  const dims = { N: 5, H: 4, V: 7 }, S = 3;
  const h = Array.from(rand(dims.N * dims.H, 3, 0.1, 1.5));
  const w = Array.from(rand(dims.V * dims.H, 4, 0.1, 1.5));
  const { t, seg } = problem(dims.N, dims.V, S, 5);
  const up = [0.7, -1.3, 2.1];
  for (const average of [false, true]) {
    const ref = reference(h, w, t, seg, S, dims, average, up);
    const f = () => {
      const o = reference(h, w, t, seg, S, dims, average, up).out;
      return o.reduce((a, x, s) => a + x * up[s], 0);
    };
    const eps = 1e-6;
    for (const [x, g] of [[h, ref.dh], [w, ref.dW]] as const) {
      for (let j = 0; j < x.length; j++) {
        const keep = x[j];
        x[j] = keep + eps;
        const a = f();
        x[j] = keep - eps;
        const b = f();
        x[j] = keep;
        const fd = (a - b) / (2 * eps);
        if (Math.abs(fd - g[j]) > 1e-6 * Math.max(1, Math.abs(fd))) {
          throw new Error(`reference gradient ${j}: ${g[j]} vs finite difference ${fd}`);
        }
      }
    }
  }
});

async function check(
  dims: { N: number; H: number; V: number },
  S: number,
  seed: number,
  opts: { average: boolean; tileBytes?: number; bf16?: boolean },
) {
  const g = await gpu();
  const { N, H, V } = dims;
  const hv = rand(N * H, seed, 0.05, 1);
  const wv = rand(V * H, seed + 1, 0.05, 0.6);
  const { t, seg } = problem(N, V, S, seed + 2);
  const up = rand(S, seed + 3, 0.2, 2);
  const wr = opts.bf16 ? wv.map(roundBf16) : wv;
  const ref = reference(hv, wr, t, seg, S, dims, opts.average, up);
  const h = Tensor.from(g, hv, [N, H]);
  const w = Tensor.from(g, wv, [V, H], opts.bf16 ? "bf16" : "f32");
  h.requiresGrad = true;
  w.requiresGrad = !opts.bf16;
  const lp = sequenceLogProbs(h, w, t, seg, S, opts);
  const what = `N=${N} H=${H} V=${V} S=${S} ${JSON.stringify(opts)}`;
  assertClose(await lp.read(), ref.out, TOL.f32Reduce, `${what} logps`);
  const upT = Tensor.from(g, up, [S]);
  const obj = tidy(() => sum(mul(lp, upT)));
  obj.backward();
  assertClose(await h.grad!.read(), ref.dh, TOL.f32Reduce, `${what} dh`);
  if (!opts.bf16) assertClose(await w.grad!.read(), ref.dW, TOL.f32Reduce, `${what} dW`);
  for (const x of [h, w, lp, upT, obj]) x.dispose();
}

Deno.test("seq_logprob: sums and means with gradients, one tile", GPU_TEST, async () => {
  await check({ N: 37, H: 16, V: 53 }, 4, 11, { average: false });
  await check({ N: 37, H: 16, V: 53 }, 4, 12, { average: true });
});

Deno.test("seq_logprob: several tiles, a larger vocabulary, bf16 head", GPU_TEST, async () => {
  // 3 tokens per tile at V = 1001
  await check({ N: 50, H: 32, V: 1001 }, 6, 21, { average: false, tileBytes: 3 * 1001 * 4 });
  await check({ N: 50, H: 32, V: 1001 }, 6, 22, { average: true, tileBytes: 1001 * 4 });
  await check({ N: 29, H: 8, V: 300 }, 3, 23, { average: false, bf16: true });
});

Deno.test("seq_logprob: empty sequences are 0; no-grad path; bad input", GPU_TEST, async () => {
  const g = await gpu();
  const N = 6, H = 4, V = 9;
  const h = Tensor.from(g, rand(N * H, 31), [N, H]);
  const w = Tensor.from(g, rand(V * H, 32), [V, H]);
  const t = [1, 2, -100, 3, -100, 4], seg = [0, 0, -1, 2, -1, 2]; // sequence 1 has no token
  const ref = reference(await h.read(), await w.read(), t, seg, 3, { N, H, V }, true, [1, 1, 1]);
  const lp = noGrad(() => sequenceLogProbs(h, w, t, seg, 3, { average: true }));
  const got = await lp.read();
  if (got[1] !== 0) throw new Error(`empty sequence: ${got[1]}`);
  assertClose(got, ref.out, TOL.f32Reduce, "means");
  const none = sequenceLogProbs(h, w, t.map(() => -100), seg, 2);
  assertClose(await none.read(), [0, 0], 0, "all ignored");
  const bad = (f: () => unknown, msg: string) => {
    try {
      f();
    } catch (e) {
      if (!String(e).includes(msg)) throw new Error(`expected "${msg}", got ${e}`);
      return;
    }
    throw new Error(`expected an error "${msg}"`);
  };
  bad(() => sequenceLogProbs(h, w, [9, 0, 0, 0, 0, 0], seg, 3), "targets[0] = 9");
  bad(() => sequenceLogProbs(h, w, t, [0, 0, 0, 5, 0, 0], 3), "segments[3] = 5");
  bad(() => sequenceLogProbs(h, w, [1], [0], 1), "must have 6 entries");
  for (const x of [h, w, lp, none]) x.dispose();
});
