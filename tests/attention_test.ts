// attention(): forward and q/k/v gradients against a float64 reference (causal and bidirectional,
// padding masks incl. rows that see no key, GQA 7:1 and 2:1, awkward T/S, head dims 8–128, KV-cache
// decode with qOffset, large logits), plus finite-difference checks of the reference itself.

import assert from "node:assert/strict";
import { assertClose, gpu, GPU_TEST, rand } from "./util.ts";
import { type AttentionCase, refAttention } from "./reference.ts";
import { attention, Tensor, tidy } from "../src/tensor/mod.ts";

type Cfg = AttentionCase;

/** Run attention on the GPU with random inputs and compare forward and gradients. */
async function check(c: Cfg, seed: number, opts: { tol?: number; amp?: number } = {}) {
  const g = await gpu();
  const { B, T, S, Hq, Hkv, D } = c;
  const amp = opts.amp ?? 1, tol = opts.tol ?? 1e-5;
  const qv = rand(B * T * Hq * D, seed, 0.05 * amp, amp);
  const kv = rand(B * S * Hkv * D, seed + 1, 0.05 * amp, amp);
  const vv = rand(B * S * Hkv * D, seed + 2), gv = rand(B * T * Hq * D, seed + 3);
  const q = Tensor.from(g, qv, [B, T, Hq, D]);
  const k = Tensor.from(g, kv, [B, S, Hkv, D]);
  const v = Tensor.from(g, vv, [B, S, Hkv, D]);
  const mask = c.mask ? Tensor.from(g, c.mask, [B, S], "i32") : undefined;
  for (const t of [q, k, v]) t.requiresGrad = true;
  const out = tidy(() =>
    attention(q, k, v, { causal: c.causal, keyMask: mask, qOffset: c.qOffset, scale: c.scale })
  );
  const got = await out.read();
  out.backward(Tensor.from(g, gv, [B, T, Hq, D]));
  const want = refAttention(c, qv, kv, vv, gv);
  const what = `B${B} T${T} S${S} Hq${Hq} Hkv${Hkv} D${D}${c.causal ? " causal" : ""}` +
    `${c.qOffset ? ` qOffset ${c.qOffset}` : ""}${c.mask ? " masked" : ""}`;
  assertClose(got, want.out, tol, `${what}: out`);
  assertClose(await q.grad!.read(), want.dq, tol, `${what}: dq`);
  assertClose(await k.grad!.read(), want.dk, tol, `${what}: dk`);
  assertClose(await v.grad!.read(), want.dv, tol, `${what}: dv`);
  // Rows that see no key are exactly 0, and so is their dq.
  const dq = await q.grad!.read();
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < Hq; h++) {
      for (let i = 0; i < T; i++) {
        if (want.seen[(b * Hq + h) * T + i]) continue;
        const o = ((b * T + i) * Hq + h) * D;
        for (let d = 0; d < D; d++) {
          assert.equal(got[o + d], 0, `${what}: unseen row out`);
          assert.equal(dq[o + d], 0, `${what}: unseen row dq`);
        }
      }
    }
  }
  for (const t of [q, k, v, out, mask]) t?.dispose();
  return want;
}

Deno.test("attention reference: finite differences of the f64 backward", () => {
  const cases: Cfg[] = [
    { B: 1, T: 3, S: 4, Hq: 2, Hkv: 1, D: 3, causal: true, qOffset: 1 },
    {
      B: 2,
      T: 3,
      S: 3,
      Hq: 2,
      Hkv: 2,
      D: 2,
      causal: false,
      scale: 0.7,
      mask: Int32Array.from([1, 0, 1, 0, 1, 1]),
    },
  ];
  for (const c of cases) {
    const q = Float64Array.from(rand(c.B * c.T * c.Hq * c.D, 11));
    const k = Float64Array.from(rand(c.B * c.S * c.Hkv * c.D, 12));
    const v = Float64Array.from(rand(c.B * c.S * c.Hkv * c.D, 13));
    const w = Float64Array.from(rand(c.B * c.T * c.Hq * c.D, 14));
    const loss = () => refAttention(c, q, k, v, null).out.reduce((a, x, i) => a + x * w[i], 0);
    const an = refAttention(c, q, k, v, w);
    const h = 1e-6;
    for (const [x, grad, name] of [[q, an.dq, "q"], [k, an.dk, "k"], [v, an.dv, "v"]] as const) {
      const fd = new Float64Array(x.length);
      for (let i = 0; i < x.length; i++) {
        const x0 = x[i];
        x[i] = x0 + h;
        const up = loss();
        x[i] = x0 - h;
        const dn = loss();
        x[i] = x0;
        fd[i] = (up - dn) / (2 * h);
      }
      assertClose(grad, fd, 1e-7, `finite differences d${name}`);
    }
  }
});

Deno.test("attention: causal GQA 7:1, B=2, T=S=33, D=16", GPU_TEST, async () => {
  await check({ B: 2, T: 33, S: 33, Hq: 7, Hkv: 1, D: 16, causal: true }, 20);
});

Deno.test("attention: GQA 2:1 causal and MHA bidirectional, T=S=70, D=64", GPU_TEST, async () => {
  await check({ B: 1, T: 70, S: 70, Hq: 4, Hkv: 2, D: 64, causal: true }, 30);
  await check({ B: 1, T: 70, S: 70, Hq: 3, Hkv: 3, D: 64, causal: false }, 31);
});

Deno.test("attention: padding masks incl. rows and batches that see no key", GPU_TEST, async () => {
  // batch 0: all keys; batch 1: left padding (causal rows 0, 1 see nothing); batch 2: all masked.
  const mask = Int32Array.from([1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0]);
  const r = await check({ B: 3, T: 5, S: 5, Hq: 4, Hkv: 2, D: 8, causal: true, mask }, 40);
  assert(r.seen.filter((s) => !s).length === 4 * (2 + 5), "expected 28 rows with no key");
  // Bidirectional with scattered holes, S != T, one kv head for two query heads.
  const holes = Int32Array.from({ length: 2 * 33 }, (_, i) => (i % 7 === 3 ? 0 : 1));
  await check({ B: 2, T: 5, S: 33, Hq: 2, Hkv: 1, D: 8, causal: false, mask: holes }, 41);
});

Deno.test(
  "attention: KV-cache decode (T=1, qOffset) matches full causal attention",
  GPU_TEST,
  async () => {
    const g = await gpu();
    // Decode steps and a chunked prefill against the f64 reference: S = 33 (one pass over the keys)
    // and S = 300 / 200 (G·T <= 8 rows per kv group: keys split over invocations, then merged).
    await check({ B: 1, T: 1, S: 33, Hq: 14, Hkv: 2, D: 64, causal: true, qOffset: 32 }, 50);
    await check({ B: 1, T: 1, S: 300, Hq: 14, Hkv: 2, D: 64, causal: true, qOffset: 299 }, 51);
    await check({ B: 2, T: 2, S: 200, Hq: 4, Hkv: 1, D: 16, causal: true, qOffset: 150 }, 52);
    await check({ B: 2, T: 5, S: 33, Hq: 2, Hkv: 1, D: 16, causal: true, qOffset: 28 }, 53);
    // The last rows of a full causal pass equal a pass over those rows with qOffset = S - T.
    for (const [S, T, Hq, Hkv, D] of [[33, 5, 2, 1, 16], [300, 1, 14, 2, 64]]) {
      const qv = rand(S * Hq * D, 54), kv = rand(S * Hkv * D, 55), vv = rand(S * Hkv * D, 56);
      const k = Tensor.from(g, kv, [1, S, Hkv, D]), v = Tensor.from(g, vv, [1, S, Hkv, D]);
      const qFull = Tensor.from(g, qv, [1, S, Hq, D]);
      const qTail = Tensor.from(g, qv.subarray((S - T) * Hq * D), [1, T, Hq, D]);
      const [full, tail] = tidy(() => [
        attention(qFull, k, v, { causal: true }),
        attention(qTail, k, v, { causal: true, qOffset: S - T }),
      ]);
      const want = (await full.read()).subarray((S - T) * Hq * D);
      assertClose(await tail.read(), want, 1e-6, `decode vs full, S=${S}`);
      for (const t of [k, v, qFull, qTail, full, tail]) t.dispose();
    }
  },
);

Deno.test(
  "attention: split-key path with padding masks (T=1, bidirectional)",
  GPU_TEST,
  async () => {
    // batch 0: scattered holes; batch 1: every key masked (its rows output 0).
    const mask = Int32Array.from(
      { length: 2 * 100 },
      (_, i) => (i < 100 ? (i % 5 === 1 ? 0 : 1) : 0),
    );
    const r = await check({ B: 2, T: 1, S: 100, Hq: 2, Hkv: 1, D: 8, causal: false, mask }, 57);
    assert.deepEqual(r.seen, [true, true, false, false]);
  },
);

Deno.test("attention: head dims 72 and 128, T=9, S=11", GPU_TEST, async () => {
  await check({ B: 1, T: 9, S: 11, Hq: 2, Hkv: 1, D: 72, causal: true, qOffset: 2 }, 60);
  await check({ B: 1, T: 9, S: 11, Hq: 2, Hkv: 2, D: 128, causal: false }, 61);
});

Deno.test("attention: stable with large logits (scores of order ±50)", GPU_TEST, async () => {
  const c: Cfg = { B: 1, T: 33, S: 33, Hq: 2, Hkv: 1, D: 16, causal: true };
  const r = await check(c, 70, { amp: 9, tol: 1e-4 });
  // Confirm the scores really are large: recompute the biggest |score| of the inputs used.
  const q = rand(c.T * c.Hq * c.D, 70, 0.45, 9), k = rand(c.S * c.D, 71, 0.45, 9);
  let big = 0;
  for (let i = 0; i < c.T; i++) {
    for (let j = 0; j <= i; j++) {
      let s = 0;
      for (let d = 0; d < c.D; d++) s += q[i * c.Hq * c.D + d] * k[j * c.D + d];
      big = Math.max(big, Math.abs(s / 4));
    }
  }
  assert(big > 50, `largest score ${big} should exceed 50`);
  assert(r.out.every(Number.isFinite));
});

Deno.test("attention: gradient only where required", GPU_TEST, async () => {
  const g = await gpu();
  const c: Cfg = { B: 1, T: 2, S: 4, Hq: 3, Hkv: 1, D: 8, causal: true, qOffset: 2 };
  const qv = rand(2 * 3 * 8, 80), kv = rand(4 * 8, 81), vv = rand(4 * 8, 82);
  const gv = rand(2 * 3 * 8, 83);
  const want = refAttention(c, qv, kv, vv, gv);
  for (const only of ["q", "k", "v"] as const) {
    const q = Tensor.from(g, qv, [1, 2, 3, 8]);
    const k = Tensor.from(g, kv, [1, 4, 1, 8]);
    const v = Tensor.from(g, vv, [1, 4, 1, 8]);
    const ts = { q, k, v };
    ts[only].requiresGrad = true;
    const out = attention(q, k, v, { causal: true, qOffset: 2 });
    out.backward(Tensor.from(g, gv, [1, 2, 3, 8]));
    for (const name of ["q", "k", "v"] as const) {
      if (name !== only) assert.equal(ts[name].grad, null, `${name} got a gradient`);
    }
    const ref = { q: want.dq, k: want.dk, v: want.dv }[only];
    assertClose(await ts[only].grad!.read(), ref, 1e-5, `d${only} alone`);
    for (const t of [q, k, v, out]) t.dispose();
  }
  // No input requires a gradient: no tape.
  const q = Tensor.from(g, qv, [1, 2, 3, 8]), k = Tensor.from(g, kv, [1, 4, 1, 8]);
  const frozen = attention(q, k, k, { causal: false });
  assert.equal(frozen.node, null);
  const ref = refAttention({ ...c, causal: false }, qv, kv, kv, null).out;
  assertClose(await frozen.read(), ref, 1e-5, "k as v, bidirectional");
  for (const t of [q, k, frozen]) t.dispose();
});

Deno.test("attention: clear errors for bad input", GPU_TEST, async () => {
  const g = await gpu();
  const t = (shape: number[], dtype: "f32" | "i32" = "f32") => Tensor.empty(g, shape, dtype);
  const q = t([1, 2, 4, 8]), k = t([1, 3, 2, 8]);
  assert.throws(
    () => attention(q, t([1, 3, 3, 8]), t([1, 3, 3, 8]), { causal: true }),
    /not a multiple/,
  );
  assert.throws(() =>
    attention(t([1, 2, 2, 6]), t([1, 3, 2, 6]), t([1, 3, 2, 6]), {
      causal: true,
    }), /head dim 6/);
  assert.throws(() =>
    attention(t([1, 2, 2, 132]), t([1, 3, 2, 132]), t([1, 3, 2, 132]), {
      causal: true,
    }), /head dim 132/);
  assert.throws(() => attention(q, k, t([1, 4, 2, 8]), { causal: true }), /differ/);
  assert.throws(() => attention(q, t([2, 3, 2, 8]), t([2, 3, 2, 8]), { causal: true }), /disagree/);
  assert.throws(() => attention(t([1, 2, 8]), k, k, { causal: true }), /4-D/);
  assert.throws(() => attention(q, k, k, { causal: true, keyMask: t([1, 3]) }), /keyMask/);
  assert.throws(() => attention(q, k, k, { causal: true, keyMask: t([1, 4], "i32") }), /keyMask/);
  assert.throws(() => attention(q, k, k, { causal: true, qOffset: -1 }), /qOffset/);
  assert.throws(() => attention(q, k, k, {} as { causal: boolean }), /causal/);
  assert.throws(() => attention(q, k, k, { causal: false, scale: NaN }), /scale/);
  assert.throws(() => attention(q, t([1, 0, 2, 8]), t([1, 0, 2, 8]), { causal: false }), /empty/);
});
