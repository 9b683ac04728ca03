// AdamW throughput: one fused update over 35M f32 parameters (p, g, m, v each 140 MB, bound as
// two row windows on a 128 MiB binding limit), clip coefficient included. Memory-bound: each
// parameter reads p, g, m, v and writes p, m, v — 28 bytes.
//
//   deno run -A --unstable-webgpu bench/optim.ts [params] [iterations]

import { Gpu } from "../src/gpu/device.ts";
import { adamwStep, clipCoefficient, noGrad, Tensor, zerosLarge } from "../src/tensor/mod.ts";

/** Result of benchAdamW. */
export interface AdamWBench {
  params: number;
  msPerStep: number;
  /** Bytes moved per second (28 bytes per parameter per step), in GB/s. */
  gbps: number;
}

/** Time adamwStep over `params` f32 parameters; prints and returns GB/s. */
export async function benchAdamW(params = 35_000_000, iterations = 5): Promise<AdamWBench> {
  const gpu = await Gpu.get();
  return await noGrad(async () => {
    const shape = [params];
    // Non-trivial values: p ~ 0.5, g alternating ±1e-3 (uploaded in slices to bound host memory).
    const p = Tensor.empty(gpu, shape, "f32"), g = Tensor.empty(gpu, shape, "f32");
    const slice = 1 << 22;
    const host = new Float32Array(slice);
    for (let e0 = 0; e0 < params; e0 += slice) {
      const n = Math.min(slice, params - e0);
      for (let i = 0; i < n; i++) host[i] = 0.5 + (i % 7) * 1e-3;
      gpu.upload(p.storage.buffer, e0 * 4, host.subarray(0, n));
      for (let i = 0; i < n; i++) host[i] = i & 1 ? 1e-3 : -2e-3;
      gpu.upload(g.storage.buffer, e0 * 4, host.subarray(0, n));
    }
    const m = zerosLarge(gpu, shape), v = zerosLarge(gpu, shape);
    const sumsq = Tensor.from(gpu, [4], []);
    const coef = clipCoefficient(sumsq, 1);
    const hp = { lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step: 1 };
    adamwStep(p, g, m, v, hp, coef); // warm-up: pipeline compile, first touch of the buffers
    await gpu.sync();
    const t0 = performance.now();
    for (let it = 0; it < iterations; it++) {
      adamwStep(p, g, m, v, { ...hp, step: it + 2, lr: hp.lr * (1 + it) }, coef);
    }
    await gpu.sync();
    const msPerStep = (performance.now() - t0) / iterations;
    const gbps = (params * 28) / (msPerStep * 1e6);
    console.log(
      `adamw: ${(params / 1e6).toFixed(1)}M params, ${msPerStep.toFixed(1)} ms/step, ` +
        `${gbps.toFixed(2)} GB/s (${gpu.adapterDescription})`,
    );
    for (const t of [p, g, m, v, sumsq, coef]) t.dispose();
    gpu.pool.trim();
    return { params, msPerStep, gbps };
  });
}

if (import.meta.main) {
  const [params, iterations] = Deno.args.map(Number);
  await benchAdamW(params || undefined, iterations || undefined);
}
