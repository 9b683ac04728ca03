// matmul / linear against float64 references: transposes, batches, bias, half weights, awkward
// sizes, every gradient, contraction chunking and tensors larger than one storage binding.
import { assertClose, gpu, GPU_TEST, rand, TOL } from "./util.ts";
import { type MatmulCase, refMatmul } from "./reference.ts";
import {
  bf16BitsToF32,
  f16BitsToF32,
  f32ToBf16Bits,
  f32ToF16Bits,
  linear,
  matmul,
  pinMatmulWeight,
  roundBf16,
  roundF16,
  setBindingLimitForTests,
  setMatmulTiles,
  Tensor,
  tidy,
  trimMatmulCache,
  unpinMatmulWeight,
  withTuning,
} from "../src/tensor/mod.ts";
import type { Gpu } from "../src/gpu/device.ts";
import { useGpuKernels } from "../src/tensor/variants.ts";

type Case = MatmulCase;

function shapes(c: Case) {
  const lead = c.Z === 1 && !c.batchedB ? [] : [c.Z];
  const aShape = [...lead, ...(c.transA ? [c.K, c.M] : [c.M, c.K])];
  const bShape = [...(c.batchedB ? [c.Z] : []), ...(c.transB ? [c.N, c.K] : [c.K, c.N])];
  return { aShape, bShape, outShape: [...lead, c.M, c.N] };
}

async function check(g: Gpu, c: Case, seed: number): Promise<void> {
  const { aShape, bShape, outShape } = shapes(c);
  const av = rand(c.Z * c.M * c.K, seed);
  const bv = rand((c.batchedB ? c.Z : 1) * c.K * c.N, seed + 1);
  const biasv = c.bias ? rand(c.N, seed + 2) : null;
  const gv = rand(c.Z * c.M * c.N, seed + 3);
  const a = Tensor.from(g, av, aShape);
  const b = Tensor.from(g, bv, bShape);
  const bias = biasv ? Tensor.from(g, biasv, [c.N]) : undefined;
  a.requiresGrad = true;
  b.requiresGrad = true;
  if (bias) bias.requiresGrad = true;
  const up = Tensor.from(g, gv, outShape);
  const out = matmul(a, b, { transA: c.transA, transB: c.transB, bias });
  const what = JSON.stringify(c);
  if (out.shape.join() !== outShape.join()) throw new Error(`${what}: shape [${out.shape}]`);
  out.backward(up);
  const want = refMatmul(c, av, bv, biasv, gv);
  assertClose(await out.read(), want.out, TOL.f32Reduce, `${what} forward`);
  assertClose(await a.grad!.read(), want.da, TOL.f32Reduce, `${what} dA`);
  assertClose(await b.grad!.read(), want.db, TOL.f32Reduce, `${what} dB`);
  if (bias) assertClose(await bias.grad!.read(), want.dbias, TOL.f32Reduce, `${what} dbias`);
  for (const t of [a, b, up, out, bias]) t?.dispose();
}

Deno.test(
  "matmul f32: transposes, bias, awkward sizes, forward and all gradients",
  GPU_TEST,
  async () => {
    const g = await gpu();
    const cases: Case[] = [
      { Z: 1, M: 33, K: 65, N: 17, bias: true },
      { Z: 1, M: 1, K: 37, N: 130 },
      { Z: 1, M: 19, K: 3, N: 1, transA: true },
      { Z: 1, M: 40, K: 21, N: 150, transB: true, bias: true },
      { Z: 1, M: 17, K: 9, N: 33, transA: true, transB: true, bias: true },
      { Z: 1, M: 3, K: 0, N: 5, bias: true }, // empty contraction: bias only
    ];
    let seed = 10;
    for (const c of cases) await check(g, c, seed += 10);
  },
);

Deno.test("matmul f32: batched b, shared b with leading dims, transposed", GPU_TEST, async () => {
  const g = await gpu();
  const cases: Case[] = [
    { Z: 3, M: 5, K: 7, N: 9, batchedB: true, bias: true },
    { Z: 2, M: 18, K: 11, N: 6, batchedB: true, transA: true, transB: true },
    { Z: 3, M: 7, K: 10, N: 13, bias: true }, // leading dims folded into M
    { Z: 3, M: 6, K: 5, N: 20, transA: true }, // shared b, dB accumulated over batches
    { Z: 2, M: 4, K: 6, N: 3, transA: true, transB: true },
    // 64 f32 = 256-byte rows: operands staged by buffer-to-texture copies.
    { Z: 2, M: 3, K: 64, N: 5, batchedB: true, transB: true, bias: true },
  ];
  let seed = 100;
  for (const c of cases) await check(g, c, seed += 10);
});

Deno.test(
  "linear: f16 / bf16 weights (widened in the shader), input gradient",
  GPU_TEST,
  async () => {
    const g = await gpu();
    const T = 21, I = 45, O = 37;
    const xv = rand(T * I, 201), wv = rand(O * I, 202), bv = rand(O, 203), gv = rand(T * O, 204);
    for (const [dtype, round] of [["f16", roundF16], ["bf16", roundBf16]] as const) {
      const wr = Array.from(wv, round); // what the stored weight holds
      const x = Tensor.from(g, xv, [T, I]);
      x.requiresGrad = true;
      const w = Tensor.from(g, wv, [O, I], dtype);
      const bias = Tensor.from(g, bv, [O]);
      const up = Tensor.from(g, gv, [T, O]);
      const y = linear(x, w, bias);
      y.backward(up);
      const c: Case = { Z: 1, M: T, K: I, N: O, transB: true };
      const want = refMatmul(c, xv, wr, bv, gv);
      assertClose(await y.read(), want.out, TOL.f32Reduce, `${dtype} forward`);
      assertClose(await x.grad!.read(), want.da, TOL.f32Reduce, `${dtype} dx`);
      // The same weight stored [K, N] (strided half packing) and a half activation.
      const wt = new Float32Array(I * O);
      for (let o = 0; o < O; o++) for (let i = 0; i < I; i++) wt[i * O + o] = wv[o * I + i];
      const w2 = Tensor.from(g, wt, [I, O], dtype);
      const xh = Tensor.from(g, xv, [T, I], dtype);
      const y2 = matmul(xh, w2);
      const xr = Array.from(xv, round);
      const want2 = refMatmul({ Z: 1, M: T, K: I, N: O }, xr, Array.from(wt, round), null, gv);
      assertClose(await y2.read(), want2.out, TOL.f32Reduce, `${dtype} [K, N] weight, half input`);
      // A single row (the 1-row kernel variant).
      const x1 = Tensor.from(g, xv.subarray(0, I), [1, I]);
      const y1 = linear(x1, w, bias);
      assertClose(await y1.read(), want.out.subarray(0, O), TOL.f32Reduce, `${dtype} one row`);
      for (const t of [x, w, bias, up, y, w2, xh, y2, x1, y1]) t.dispose();
    }
  },
);

Deno.test("matmul: GPU tile shape (64 invocations × 4 rows), same results", GPU_TEST, async () => {
  const g = await gpu();
  setMatmulTiles(g, { wg: 64, rows: 4 });
  try {
    await check(g, { Z: 1, M: 37, K: 19, N: 1100, transB: true, bias: true }, 700);
    await check(g, { Z: 2, M: 6, K: 8, N: 9, batchedB: true, transA: true }, 710);
    const T = 9, I = 128, O = 70;
    const xv = rand(T * I, 720), wv = rand(O * I, 721);
    const x = Tensor.from(g, xv, [T, I]);
    const w = Tensor.from(g, wv, [O, I], "bf16");
    const y = linear(x, w);
    const c: Case = { Z: 1, M: T, K: I, N: O, transB: true };
    const want = refMatmul(c, xv, Array.from(wv, roundBf16), null, new Float32Array(T * O));
    assertClose(await y.read(), want.out, TOL.f32Reduce, "bf16 weight, GPU tiles");
    for (const t of [x, w, y]) t.dispose();
  } finally {
    setMatmulTiles(g, null);
  }
});

Deno.test(
  "matmul: contraction longer than one texture row (chunks accumulate)",
  GPU_TEST,
  async () => {
    const g = await gpu();
    // K = 40,000 > 32,768 = 8192 texels × 4: two passes, the second adding into the output.
    const c: Case = { Z: 1, M: 3, K: 40_000, N: 5, transB: true, bias: true };
    await check(g, c, 300);
  },
);

Deno.test("linear: a 1-D input is one row", GPU_TEST, async () => {
  const g = await gpu();
  const I = 11, O = 6;
  const xv = rand(I, 800), wv = rand(O * I, 801), bv = rand(O, 802);
  const x = Tensor.from(g, xv, [I]);
  x.requiresGrad = true;
  const w = Tensor.from(g, wv, [O, I]);
  const b = Tensor.from(g, bv, [O]);
  const y = tidy(() => linear(x, w, b));
  if (y.shape.join() !== `${O}`) throw new Error(`shape [${y.shape}]`);
  const up = Tensor.from(g, new Float32Array(O).fill(1), [O]);
  y.backward(up);
  const want = refMatmul(
    { Z: 1, M: 1, K: I, N: O, transB: true },
    xv,
    wv,
    bv,
    new Float32Array(O).fill(1),
  );
  assertClose(await y.read(), want.out, TOL.f32Reduce, "1-D forward");
  assertClose(await x.grad!.read(), want.da, TOL.f32Reduce, "1-D dx");
  for (const t of [x, w, b, y, up]) t.dispose();
});

Deno.test("linear: a pinned weight is staged once and reused", GPU_TEST, async () => {
  const g = await gpu();
  const T = 5, I = 45, O = 23;
  const xv = rand(T * I, 900), wv = rand(O * I, 901);
  const x = Tensor.from(g, xv, [T, I]);
  const w = Tensor.from(g, wv, [O, I], "bf16");
  const want = refMatmul(
    { Z: 1, M: T, K: I, N: O, transB: true },
    xv,
    Array.from(wv, roundBf16),
    null,
    [],
  );
  // Dispatches of one call: stage x, stage w, GEMM.
  const calls = async () => {
    const d0 = g.dispatches;
    const y = linear(x, w);
    const d = g.dispatches - d0;
    assertClose(await y.read(), want.out, TOL.f32Reduce, "pinned weight");
    y.dispose();
    return d;
  };
  const plain = await calls();
  pinMatmulWeight(w);
  const first = await calls();
  const again = await calls();
  // The GPU variants (gemm_tiled) read the weight in place: nothing staged, pinning saves nothing.
  const saved = useGpuKernels(g) ? 0 : 1;
  if (first !== plain || again !== plain - saved) {
    throw new Error(`dispatches: plain ${plain}, pinned first ${first}, pinned again ${again}`);
  }
  unpinMatmulWeight(w);
  if ((await calls()) !== plain) throw new Error("unpinned weight not staged again");
  for (const t of [x, w]) t.dispose();
});

Deno.test("matmul: errors name the problem", GPU_TEST, async () => {
  const g = await gpu();
  const a = Tensor.from(g, rand(6, 1), [2, 3]);
  const b = Tensor.from(g, rand(8, 2), [4, 2]);
  const throws = (f: () => unknown, text: string) => {
    try {
      f();
    } catch (e) {
      if (!(e as Error).message.includes(text)) throw e;
      return;
    }
    throw new Error(`expected an error containing "${text}"`);
  };
  throws(() => matmul(a, b), "contraction sizes differ");
  throws(() => matmul(a, b, { transB: true }), "contraction sizes differ");
  throws(() => matmul(a, Tensor.from(g, rand(12, 3), [3, 4]), { bias: a }), "bias must be f32 [4]");
  const wh = Tensor.from(g, rand(12, 4), [4, 3], "bf16");
  wh.requiresGrad = true;
  throws(() => linear(a, wh), "must be f32");
  throws(() => linear(a, Tensor.from(g, rand(8, 5), [4, 2])), "does not end in 2 features");
  throws(
    () => matmul(Tensor.from(g, rand(24, 5), [2, 3, 4]), Tensor.from(g, rand(40, 6), [5, 4, 2])),
    "leading dims",
  );
  for (const t of [a, b, wh]) t.dispose();
});

// A reproducible table of 4096 half bit patterns for big weights (filled without per-element
// float conversion).
function halfTable(seed: number, bf16: boolean): Uint16Array {
  const v = rand(4096, seed, 0.05, 1);
  return Uint16Array.from(v, (x) => (bf16 ? f32ToBf16Bits(x) : f32ToF16Bits(x)));
}

Deno.test(
  "linear: f16 weight [151936, 896] (> one binding, 19 texture layers)",
  GPU_TEST,
  async () => {
    const g = await gpu();
    const V = 151_936, H = 896, T = 3;
    const table = halfTable(400, false);
    const bits = new Uint16Array(V * H);
    for (let i = 0; i < bits.length; i++) bits[i] = table[(i * 2654435761) >>> 20];
    const w = Tensor.fromBytes(g, new Uint8Array(bits.buffer), [V, H], "f16");
    const xv = rand(T * H, 401);
    const x = Tensor.from(g, xv, [T, H]);
    const y = tidy(() => linear(x, w));
    const got = await y.read();
    // Columns spread over the whole vocabulary (every binding window and texture layer).
    const cols = [0, 1, 8191, 8192, 33_333, 75_000, 99_999, 131_071, 140_000, V - 2, V - 1];
    const gotS: number[] = [], want: number[] = [];
    for (let t = 0; t < T; t++) {
      for (const v of cols) {
        let s = 0;
        for (let h = 0; h < H; h++) s += xv[t * H + h] * f16BitsToF32(bits[v * H + h]);
        want.push(s);
        gotS.push(got[t * V + v]);
      }
    }
    assertClose(gotS, want, TOL.f32Reduce, "vocab-head logits");
    for (const t of [w, x, y]) t.dispose();
    trimMatmulCache(g);
  },
);

Deno.test(
  "matmul: windows — packed from > 128 MiB row- and column-major, output > 128 MiB",
  GPU_TEST,
  async () => {
    const g = await gpu();
    const maxBind = g.limits.maxStorageBufferBindingSize;
    // (1) bf16 weight [R, 500] > one binding, row bytes not a copy multiple: row windows.
    {
      const R = Math.ceil((maxBind + 2 ** 20) / 1000), K = 500, T = 2;
      const table = halfTable(500, true);
      const bits = new Uint16Array(R * K);
      for (let i = 0; i < bits.length; i++) bits[i] = table[(i * 2654435761) >>> 20];
      const w = Tensor.fromBytes(g, new Uint8Array(bits.buffer), [R, K], "bf16");
      const xv = rand(T * K, 501);
      const x = Tensor.from(g, xv, [T, K]);
      const y = linear(x, w);
      const got = await y.read();
      const rows = [0, 7, 65_000, 134_000, R - 1];
      const gotS: number[] = [], want: number[] = [];
      for (let t = 0; t < T; t++) {
        for (const r of rows) {
          let s = 0;
          for (let k = 0; k < K; k++) s += xv[t * K + k] * bf16BitsToF32(bits[r * K + k]);
          want.push(s);
          gotS.push(got[t * R + r]);
        }
      }
      assertClose(gotS, want, TOL.f32Reduce, "bf16 row windows");
      for (const t of [w, x, y]) t.dispose();
    }
    // (2) f32 b [K, N] > one binding read by columns (contraction windows), output > one binding.
    {
      // b [40, 2^20] f32 = 160 MiB read by columns; out [M, 2^20] just over one binding.
      const K = 40, N = 2 ** 20, M = Math.ceil((maxBind + 2 ** 20) / (4 * N));
      const bv = new Float32Array(K * N);
      const tv = rand(4096, 601);
      for (let i = 0; i < bv.length; i++) bv[i] = tv[(i * 2654435761) >>> 20];
      const av = rand(M * K, 602);
      const a = Tensor.from(g, av, [M, K]);
      const b = Tensor.from(g, bv, [K, N]);
      const y = matmul(a, b);
      const got = await y.read();
      const gotS: number[] = [], want: number[] = [];
      for (const m of [0, 1, Math.floor(M / 2), M - 1]) {
        for (const n of [0, 3, 777_777, N - 7, N - 1]) {
          let s = 0;
          for (let k = 0; k < K; k++) s += av[m * K + k] * bv[k * N + n];
          want.push(s);
          gotS.push(got[m * N + n]);
        }
      }
      assertClose(gotS, want, TOL.f32, "column windows + output windows");
      for (const t of [a, b, y]) t.dispose();
    }
    trimMatmulCache(g);
  },
);

Deno.test(
  "matmul: small binding limit (test hook) — every window path, forward and gradients",
  GPU_TEST,
  async () => {
    const g = await gpu();
    // 2 KiB bindings: a [37, 45] f32 (6.7 KiB) is packed in row windows, its transposed and
    // column views in contraction windows, and the [37, 50] output is written in row windows.
    setBindingLimitForTests(2048);
    try {
      const cases: Case[] = [
        { Z: 1, M: 37, K: 45, N: 50, bias: true },
        { Z: 1, M: 37, K: 45, N: 50, transA: true, transB: true },
        { Z: 2, M: 21, K: 30, N: 26, batchedB: true, transB: true },
      ];
      let seed = 900;
      for (const c of cases) await check(g, c, seed += 10);
      // Half weights through windows too (bf16 [60, 40] = 4.7 KiB).
      const wv = rand(60 * 40, 990), xv = rand(5 * 40, 991);
      const bits = new Uint16Array(wv.length);
      for (let i = 0; i < wv.length; i++) bits[i] = f32ToBf16Bits(wv[i]);
      const w = Tensor.fromBytes(g, new Uint8Array(bits.buffer), [60, 40], "bf16");
      const x = Tensor.from(g, xv, [5, 40]);
      const y = linear(x, w);
      const want = new Float64Array(5 * 60);
      for (let t = 0; t < 5; t++) {
        for (let o = 0; o < 60; o++) {
          let s = 0;
          for (let k = 0; k < 40; k++) s += xv[t * 40 + k] * bf16BitsToF32(bits[o * 40 + k]);
          want[t * 60 + o] = s;
        }
      }
      assertClose(await y.read(), want, TOL.f32Reduce, "bf16 linear through windows");
      for (const t of [w, x, y]) t.dispose();
    } finally {
      setBindingLimitForTests(null);
      trimMatmulCache(g);
    }
  },
);

Deno.test(
  "linear: input gradient through the transposed GEMM (gemm_nn) for f32, f16, bf16 weights",
  GPU_TEST,
  async () => {
    const g = await gpu();
    // Awkward sizes: K = 45 (not a multiple of 4 or 8), N = 50, M = 37.
    const M = 37, K = 45, N = 50;
    const xv = rand(M * K, 1200), wv = rand(N * K, 1201), gv = rand(M * N, 1202);
    for (const dtype of ["f32", "f16", "bf16"] as const) {
      const round = dtype === "bf16" ? roundBf16 : dtype === "f16" ? roundF16 : (v: number) => v;
      const wr = wv.map(round);
      const w = dtype === "f32" ? Tensor.from(g, wv, [N, K]) : Tensor.fromBytes(
        g,
        new Uint8Array(
          Uint16Array.from(wv, dtype === "bf16" ? f32ToBf16Bits : f32ToF16Bits).buffer,
        ),
        [N, K],
        dtype,
      );
      const want = new Float64Array(M * K);
      for (let m = 0; m < M; m++) {
        for (let k = 0; k < K; k++) {
          let s = 0;
          for (let n = 0; n < N; n++) s += gv[m * N + n] * wr[n * K + k];
          want[m * K + k] = s;
        }
      }
      const grads: Float32Array[] = [];
      for (const transposedGemm of [true, false]) {
        await withTuning({ transposedGemm }, async () => {
          const x = Tensor.from(g, xv, [M, K]);
          x.requiresGrad = true;
          const up = Tensor.from(g, gv, [M, N]);
          const y = linear(x, w);
          y.backward(up);
          grads.push(await x.grad!.read() as Float32Array);
          for (const t of [x, x.grad!, y]) t.dispose();
        });
      }
      assertClose(grads[0], want, TOL.f32Reduce, `${dtype} dA via gemm_nn`);
      assertClose(grads[1], want, TOL.f32Reduce, `${dtype} dA via packed transpose`);
      w.dispose();
    }
    trimMatmulCache(g);
  },
);
