// `deno bench -A --unstable-webgpu bench/`: one Deno.bench group per kernel family at the real
// model's shapes (Qwen2.5-0.5B + SigLIP2-base, 351 tokens). Every iteration records its kernels
// and waits for the GPU to finish them (gpu.sync()) inside the timed region, so the times are
// device times plus submission, not recording alone. Iteration counts are small (n, warmup):
// one real-shape iteration takes 10 ms to seconds on lavapipe.
//
//   matmul       linear x·wᵀ: MLP up/down (351×896×4864, 351×4864×896), attention q/o and k/v
//                projections, SigLIP MLP (196×768×3072), f32 and bf16 weights
//   attention    fused forward + backward, causal, T 351, 14 q / 2 kv heads, d 64
//   linear-CE    fused linear + cross-entropy over the 151936 vocabulary, 117 tokens, bf16, + dh
//   norms        RMSNorm and LayerNorm forward + backward
//   adamw        one AdamW step over 35M parameters
//   pixel shuffle  SigLIP's 14×14 grid, factor 2, forward + backward

import { Gpu } from "../src/gpu/device.ts";
import {
  adamwStep,
  attention,
  f32ToBf16Bits,
  layerNorm,
  linear,
  linearCrossEntropy,
  noGrad,
  pixelShuffle,
  rmsNorm,
  Tensor,
  tidy,
} from "../src/tensor/mod.ts";

const gpu = await Gpu.get();
const T = 351;

// Deterministic values ±[0.002, 0.04] (never zero).
function values(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const x = 0.002 + 0.038 * (s >>> 8) / 16777216;
    out[i] = s & 1 ? -x : x;
  }
  return out;
}

function tensor(shape: number[], seed: number, dtype: "f32" | "bf16" = "f32"): Tensor {
  const v = values(shape.reduce((a, b) => a * b, 1), seed);
  if (dtype === "f32") return Tensor.from(gpu, v, shape);
  // A loop, not Uint16Array.from(v, fn): that builds a temporary JS list first, which runs out of
  // heap for the 136M-element vocabulary weight.
  const bits = new Uint16Array(v.length);
  for (let i = 0; i < v.length; i++) bits[i] = f32ToBf16Bits(v[i]);
  return Tensor.fromBytes(gpu, new Uint8Array(bits.buffer), shape, "bf16");
}

// One timed iteration: record, then wait for the device.
async function timed(b: Deno.BenchContext, fn: () => void): Promise<void> {
  await gpu.sync();
  b.start();
  tidy(fn);
  await gpu.sync();
  b.end();
}

// ---- matmul ----
const MATMULS: [string, number, number, number][] = [
  ["mlp up/gate", T, 896, 4864],
  ["mlp down", T, 4864, 896],
  ["attn q/o", T, 896, 896],
  ["attn k/v", T, 896, 128],
  ["siglip fc1", 196, 768, 3072],
];
for (const [what, M, K, N] of MATMULS) {
  for (const dtype of ["f32", "bf16"] as const) {
    let x: Tensor | null = null, w: Tensor | null = null;
    Deno.bench({
      name: `${what} ${M}×${K}×${N} w ${dtype}`,
      group: "matmul",
      n: 5,
      warmup: 1,
      async fn(b) {
        x ??= tensor([M, K], 1);
        w ??= tensor([N, K], 2, dtype);
        await timed(b, () => noGrad(() => linear(x!, w!)));
      },
    });
  }
}

// ---- attention ----
{
  const shape = { B: 1, Hq: 14, Hkv: 2, D: 64 };
  let q: Tensor | null = null, k: Tensor | null = null, v: Tensor | null = null;
  let g: Tensor | null = null;
  const setup = () => {
    q ??= tensor([shape.B, T, shape.Hq, shape.D], 3);
    k ??= tensor([shape.B, T, shape.Hkv, shape.D], 4);
    v ??= tensor([shape.B, T, shape.Hkv, shape.D], 5);
    g ??= tensor([shape.B, T, shape.Hq, shape.D], 6);
    for (const t of [q, k, v]) t.requiresGrad = true;
  };
  Deno.bench({
    name: `fwd T ${T} 14q/2kv d 64 causal`,
    group: "attention",
    n: 5,
    warmup: 1,
    async fn(b) {
      setup();
      await timed(b, () => noGrad(() => attention(q!, k!, v!, { causal: true })));
    },
  });
  Deno.bench({
    name: `fwd + bwd T ${T} 14q/2kv d 64 causal`,
    group: "attention",
    n: 5,
    warmup: 1,
    async fn(b) {
      setup();
      await timed(b, () => {
        // A second handle on g: backward consumes (disposes) the gradient it is given.
        attention(q!, k!, v!, { causal: true }).backward(g!.view(g!.shape));
      });
      for (const t of [q!, k!, v!]) {
        t.grad?.dispose();
        t.grad = null;
      }
    },
  });
}

// ---- linear-CE ----
{
  const N = 117, H = 896, V = 151936;
  let h: Tensor | null = null, w: Tensor | null = null, tg: Tensor | null = null;
  const setup = () => {
    h ??= tensor([N, H], 7);
    w ??= tensor([V, H], 8, "bf16");
    tg ??= Tensor.from(gpu, Int32Array.from({ length: N }, (_, i) => (i * 7919) % V), [N], "i32");
  };
  Deno.bench({
    name: `loss ${N}×${H}×${V} w bf16`,
    group: "linear-CE",
    n: 2,
    warmup: 1,
    async fn(b) {
      setup();
      await timed(b, () => noGrad(() => linearCrossEntropy(h!, w!, tg!)));
    },
  });
  Deno.bench({
    name: `loss + dh ${N}×${H}×${V} w bf16`,
    group: "linear-CE",
    n: 2,
    warmup: 1,
    async fn(b) {
      setup();
      h!.requiresGrad = true;
      await timed(b, () => linearCrossEntropy(h!, w!, tg!).backward());
      h!.grad?.dispose();
      h!.grad = null;
    },
  });
}

// ---- norms ----
{
  let x: Tensor | null = null, w: Tensor | null = null, bias: Tensor | null = null;
  let xs: Tensor | null = null, ws: Tensor | null = null;
  let gx: Tensor | null = null, gxs: Tensor | null = null;
  Deno.bench({
    name: `rmsNorm fwd + bwd [${T}, 896]`,
    group: "norms",
    n: 10,
    warmup: 2,
    async fn(b) {
      x ??= tensor([T, 896], 9);
      w ??= tensor([896], 10);
      gx ??= tensor([T, 896], 11);
      x.requiresGrad = true;
      w.requiresGrad = true;
      await timed(b, () => rmsNorm(x!, w!, 1e-6).backward(gx!.view(gx!.shape)));
      for (const t of [x, w]) {
        t.grad?.dispose();
        t.grad = null;
      }
    },
  });
  Deno.bench({
    name: "layerNorm fwd + bwd [196, 768]",
    group: "norms",
    n: 10,
    warmup: 2,
    async fn(b) {
      xs ??= tensor([196, 768], 12);
      ws ??= tensor([768], 13);
      bias ??= tensor([768], 14);
      gxs ??= tensor([196, 768], 15);
      for (const t of [xs, ws, bias]) t.requiresGrad = true;
      await timed(b, () => layerNorm(xs!, ws!, bias!, 1e-6).backward(gxs!.view(gxs!.shape)));
      for (const t of [xs, ws, bias]) {
        t.grad?.dispose();
        t.grad = null;
      }
    },
  });
}

// ---- AdamW ----
{
  const n = 35_000_000;
  let p: Tensor | null = null, g: Tensor | null = null, m: Tensor | null = null;
  let v: Tensor | null = null;
  let step = 0;
  Deno.bench({
    name: "AdamW step, 35M params",
    group: "adamw",
    n: 5,
    warmup: 1,
    async fn(b) {
      p ??= tensor([n], 16);
      g ??= tensor([n], 17);
      m ??= tensor([n], 18);
      v ??= Tensor.from(gpu, new Float32Array(n).fill(1e-4), [n]);
      step++;
      const hp = { lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step };
      await timed(b, () => adamwStep(p!, g!, m!, v!, hp));
    },
  });
}

// ---- pixel shuffle ----
{
  let x: Tensor | null = null, gy: Tensor | null = null;
  Deno.bench({
    name: "pixelShuffle fwd + bwd [1, 196, 768], r 2",
    group: "pixel shuffle",
    n: 10,
    warmup: 2,
    async fn(b) {
      x ??= tensor([1, 196, 768], 19);
      gy ??= tensor([1, 49, 3072], 20);
      x.requiresGrad = true;
      await timed(b, () => pixelShuffle(x!, 2).backward(gy!.view(gy!.shape)));
      x.grad?.dispose();
      x.grad = null;
    },
  });
}
