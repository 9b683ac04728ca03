// The kernel variants meant for a discrete GPU (shaders/gemm_tiled.wgsl,
// shaders/attention_tiled.wgsl), forced on whatever adapter runs the tests
// (tuning.forceGpuVariants), against float64 references on random non-zero inputs: odd shapes,
// f32 / bf16 / f16 weights, every layout of the training step, windows; attention causal,
// bidirectional, GQA, masked, head dims 16..128. Each test also checks that the tiled kernels
// ran and the texture-staged ones did not.
import { assertClose, gpu, GPU_TEST, rand, TOL } from "./util.ts";
import { refAttention, refMatmul } from "./reference.ts";
import {
  matmul,
  roundBf16,
  roundF16,
  setBindingLimitForTests,
  Tensor,
  withTuning,
} from "../src/tensor/mod.ts";
import { attention } from "../src/tensor/ops/attention.ts";
import { setNativeF16 } from "../src/tensor/ops/gemm_tiled.ts";
import type { Dispatch, Gpu } from "../src/gpu/device.ts";

// Run fn with the GPU variants forced, returning the shader.entry names it dispatched.
async function forced(g: Gpu, fn: () => Promise<void>): Promise<Set<string>> {
  const seen = new Set<string>();
  const dispatch = g.dispatch;
  g.dispatch = (d: Dispatch) => {
    seen.add(`${d.shader}.${d.entry}`);
    dispatch.call(g, d);
  };
  try {
    await withTuning({ forceGpuVariants: true }, fn);
  } finally {
    g.dispatch = dispatch;
  }
  return seen;
}

// ---- GEMM ----

interface Mm {
  Z: number;
  M: number;
  K: number;
  N: number;
  transA?: boolean;
  transB?: boolean;
  batchedB?: boolean;
  bias?: boolean;
  dtype?: "f32" | "bf16" | "f16";
}

async function checkMatmul(g: Gpu, c: Mm, seed: number): Promise<void> {
  const dtype = c.dtype ?? "f32";
  const lead = c.Z === 1 && !c.batchedB ? [] : [c.Z];
  const aShape = [...lead, ...(c.transA ? [c.K, c.M] : [c.M, c.K])];
  const bShape = [...(c.batchedB ? [c.Z] : []), ...(c.transB ? [c.N, c.K] : [c.K, c.N])];
  const av = rand(c.Z * c.M * c.K, seed);
  const bv = rand((c.batchedB ? c.Z : 1) * c.K * c.N, seed + 1);
  const biasv = c.bias ? rand(c.N, seed + 2) : null;
  const gv = rand(c.Z * c.M * c.N, seed + 3);
  const round = dtype === "bf16" ? roundBf16 : dtype === "f16" ? roundF16 : (x: number) => x;
  const a = Tensor.from(g, av, aShape);
  const b = Tensor.from(g, bv, bShape, dtype);
  const bias = biasv ? Tensor.from(g, biasv, [c.N]) : undefined;
  a.requiresGrad = true;
  b.requiresGrad = dtype === "f32";
  const out = matmul(a, b, { transA: c.transA, transB: c.transB, bias });
  out.backward(Tensor.from(g, gv, [...lead, c.M, c.N]));
  const want = refMatmul(c, av, Array.from(bv, round), biasv, gv);
  const what = JSON.stringify(c);
  const tol = TOL.f32Reduce;
  assertClose(await out.read(), want.out, tol, `${what} forward`);
  assertClose(await a.grad!.read(), want.da, tol, `${what} dA`);
  if (b.requiresGrad) assertClose(await b.grad!.read(), want.db, tol, `${what} dB`);
  for (const t of [a, b, bias, out]) t?.dispose();
}

function expectTiledGemm(seen: Set<string>, entries: string[]): void {
  for (const e of entries) {
    const shader = e === "tiled_f16" ? "gemm_tiled_f16" : "gemm_tiled";
    if (!seen.has(`${shader}.${e}`)) throw new Error(`${shader}.${e} did not run: ${[...seen]}`);
  }
  const staged = [...seen].filter((s) => s.startsWith("matmul"));
  if (staged.length) throw new Error(`texture kernels ran with the GPU variants: ${staged}`);
}

Deno.test(
  "gemm_tiled f32: odd shapes, every layout of forward and backward",
  GPU_TEST,
  async () => {
    const g = await gpu();
    const cases: Mm[] = [
      { Z: 1, M: 70, K: 37, N: 65, transB: true, bias: true }, // x·Wᵀ, g·W, gᵀ·x
      { Z: 1, M: 1, K: 131, N: 130, transB: true }, // one row (decode)
      { Z: 1, M: 129, K: 64, N: 68, bias: true }, // vector loads along r and along rows
      { Z: 1, M: 33, K: 3, N: 5, transA: true },
      { Z: 1, M: 17, K: 9, N: 33, transA: true, transB: true, bias: true },
      { Z: 1, M: 3, K: 0, N: 5, bias: true }, // empty contraction: bias only
      { Z: 3, M: 5, K: 19, N: 9, batchedB: true, bias: true },
      { Z: 2, M: 18, K: 11, N: 6, batchedB: true, transA: true, transB: true },
      { Z: 3, M: 7, K: 10, N: 13 }, // leading dims folded into M
      { Z: 3, M: 6, K: 5, N: 20, transA: true }, // shared b: dB accumulated over batches
    ];
    const seen = await forced(g, async () => {
      let seed = 1000;
      for (const c of cases) await checkMatmul(g, c, seed += 10);
    });
    expectTiledGemm(seen, ["tiled_f32"]);
  },
);

Deno.test("gemm_tiled: bf16 and f16 weights, forward and input gradient", GPU_TEST, async () => {
  const g = await gpu();
  const cases = (dtype: "bf16" | "f16"): Mm[] => [
    { Z: 1, M: 67, K: 45, N: 71, transB: true, bias: true, dtype }, // odd: scalar half loads
    { Z: 1, M: 20, K: 96, N: 66, transB: true, dtype }, // even: vector loads
    { Z: 2, M: 9, K: 33, N: 14, dtype }, // [K, N] weight: contiguous along the outputs
    { Z: 1, M: 1, K: 64, N: 40, transB: true, dtype },
  ];
  // f16 twice where the device has shader-f16: vec4<f16> loads, then the packed-u32 path.
  const runs: ["bf16" | "f16", boolean][] = [["bf16", true], ["f16", false]];
  if (g.features.shaderF16) runs.push(["f16", true]);
  let seed = 2000;
  for (const [dtype, native] of runs) {
    setNativeF16(native);
    try {
      const seen = await forced(g, async () => {
        for (const c of cases(dtype)) await checkMatmul(g, c, seed += 10);
      });
      // A half weight has no gradient: both products read the weight.
      expectTiledGemm(seen, [dtype === "f16" && native ? "tiled_f16" : "tiled_half"]);
    } finally {
      setNativeF16(true);
    }
  }
});

Deno.test("gemm_tiled: output and operand windows (small binding limit)", GPU_TEST, async () => {
  const g = await gpu();
  setBindingLimitForTests(4096);
  try {
    const seen = await forced(g, async () => {
      await checkMatmul(g, { Z: 1, M: 75, K: 20, N: 30, transB: true, bias: true }, 3000);
      await checkMatmul(g, { Z: 3, M: 40, K: 12, N: 17, batchedB: true }, 3010);
      await checkMatmul(g, { Z: 1, M: 50, K: 24, N: 28, transB: true, dtype: "bf16" }, 3020);
    });
    if (!seen.has("gemm_tiled.tiled_f32")) {
      throw new Error(`tiled kernel did not run: ${[...seen]}`);
    }
  } finally {
    setBindingLimitForTests(null);
  }
});

// ---- attention ----

interface At {
  B: number;
  T: number;
  S: number;
  Hq: number;
  Hkv: number;
  D: number;
  causal: boolean;
  qOffset?: number;
  mask?: number[];
}

async function checkAttention(g: Gpu, c: At, seed: number): Promise<void> {
  const { B, T, S, Hq, Hkv, D } = c;
  const qv = rand(B * T * Hq * D, seed), kv = rand(B * S * Hkv * D, seed + 1);
  const vv = rand(B * S * Hkv * D, seed + 2), gv = rand(B * T * Hq * D, seed + 3);
  const q = Tensor.from(g, qv, [B, T, Hq, D]);
  const k = Tensor.from(g, kv, [B, S, Hkv, D]);
  const v = Tensor.from(g, vv, [B, S, Hkv, D]);
  const mask = c.mask ? Tensor.from(g, c.mask, [B, S], "i32") : undefined;
  for (const t of [q, k, v]) t.requiresGrad = true;
  const out = attention(q, k, v, { causal: c.causal, keyMask: mask, qOffset: c.qOffset });
  const got = await out.read();
  out.backward(Tensor.from(g, gv, [B, T, Hq, D]));
  const want = refAttention(c, qv, kv, vv, gv);
  const what = JSON.stringify({ ...c, mask: c.mask ? "yes" : undefined });
  assertClose(got, want.out, 1e-5, `${what}: out`);
  assertClose(await q.grad!.read(), want.dq, 1e-4, `${what}: dq`);
  assertClose(await k.grad!.read(), want.dk, 1e-4, `${what}: dk`);
  assertClose(await v.grad!.read(), want.dv, 1e-4, `${what}: dv`);
  for (const t of [q, k, v, out, mask]) t?.dispose();
}

Deno.test("attention_tiled: causal / bidirectional, GQA, masks, head dims", GPU_TEST, async () => {
  const g = await gpu();
  // Rows past one workgroup (G·T > 64), keys past one tile (S > 16) and not a multiple of it.
  const mask = Array.from({ length: 2 * 37 }, (_, i) => (i % 5 === 3 || i >= 70 ? 0 : 1));
  const cases: At[] = [
    { B: 2, T: 33, S: 33, Hq: 7, Hkv: 1, D: 16, causal: true }, // GQA 7:1
    { B: 1, T: 70, S: 70, Hq: 2, Hkv: 2, D: 64, causal: false },
    { B: 1, T: 45, S: 45, Hq: 4, Hkv: 2, D: 64, causal: true },
    { B: 2, T: 37, S: 37, Hq: 2, Hkv: 1, D: 8, causal: true, mask }, // incl. rows seeing nothing
    { B: 1, T: 9, S: 11, Hq: 2, Hkv: 1, D: 72, causal: false },
    { B: 1, T: 20, S: 50, Hq: 2, Hkv: 2, D: 128, causal: true, qOffset: 30 }, // chunked prefill
  ];
  const seen = await forced(g, async () => {
    let seed = 4000;
    for (const c of cases) await checkAttention(g, c, seed += 10);
  });
  if (!seen.has("attention_tiled.fwd") || seen.has("attention.fwd")) {
    throw new Error(`the tiled forward did not replace attention.fwd: ${[...seen]}`);
  }
});
