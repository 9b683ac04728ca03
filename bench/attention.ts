// Attention throughput: fused forward (online softmax, keeps logsumexp) and recomputing backward
// at the Qwen2.5-0.5B training shape by default — B=1, T=360, 14 query heads / 2 kv heads,
// head dim 64, causal.
//
// FLOPs are counted the usual way for attention: forward 4·D per visible (query, key) pair and
// head (q·k and p·v), backward 10·D (recomputed q·k, dout·v, dv, dq, dk). The kernels do more:
// the backward recomputes q·k and dout·v in both of its passes (14·D per pair), which avoids
// atomics and [T, S] buffers. Timings: warm-up, then `iterations` runs, one gpu.sync() at the end.
// Also printed: process CPU time per iteration (lavapipe runs on the CPU; other load on the
// machine inflates wall time but not CPU time).
//
//   deno run -A --unstable-webgpu bench/attention.ts [--t 360] [--s T] [--hq 14] [--hkv 2] \
//     [--d 64] [--bidirectional] [--iterations 3]

import process from "node:process";
import { parseArgs } from "node:util";
import { Gpu } from "../src/gpu/device.ts";
import { attention, noGrad, Tensor, tidy } from "../src/tensor/mod.ts";

/** Shape of one attention benchmark. */
export interface AttentionBenchOptions {
  B?: number;
  T?: number;
  /** Key positions (default T; with causal, queries sit at the last T positions). */
  S?: number;
  Hq?: number;
  Hkv?: number;
  D?: number;
  causal?: boolean;
  iterations?: number;
}

/** Result of {@link benchAttention}. */
export interface AttentionBench {
  msForward: number;
  msBackward: number;
  gflopsForward: number;
  gflopsBackward: number;
  /** Forward + backward. */
  gflops: number;
  /** Process CPU milliseconds per forward. */
  cpuMsForward: number;
  /** Process CPU milliseconds per forward + backward. */
  cpuMs: number;
}

function values(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = (s / 2 ** 32 - 0.5) * 2;
  }
  return out;
}

/** Time attention forward and forward+backward; prints and returns GFLOP/s. */
export async function benchAttention(o: AttentionBenchOptions = {}): Promise<AttentionBench> {
  const B = o.B ?? 1, T = o.T ?? 360, S = o.S ?? T, Hq = o.Hq ?? 14, Hkv = o.Hkv ?? 2;
  const D = o.D ?? 64, causal = o.causal ?? true, iterations = o.iterations ?? 3;
  const qOffset = causal ? S - T : 0;
  const gpu = await Gpu.get();
  const q = Tensor.from(gpu, values(B * T * Hq * D, 1), [B, T, Hq, D]);
  const k = Tensor.from(gpu, values(B * S * Hkv * D, 2), [B, S, Hkv, D]);
  const v = Tensor.from(gpu, values(B * S * Hkv * D, 3), [B, S, Hkv, D]);
  const dout = Tensor.from(gpu, values(B * T * Hq * D, 4), [B, T, Hq, D]);
  for (const t of [q, k, v]) t.requiresGrad = true;
  const opts = { causal, qOffset };
  const forward = () => noGrad(() => attention(q, k, v, opts).dispose());
  const both = () => {
    // backward() takes ownership of the gradient it is given: hand it a second handle.
    tidy(() => attention(q, k, v, opts)).backward(dout.view(dout.shape));
    for (const t of [q, k, v]) {
      t.grad?.dispose();
      t.grad = null;
    }
  };
  // Warm-up: pipeline compilation and first touch of the buffers.
  forward();
  both();
  await gpu.sync();
  let c0 = process.cpuUsage();
  let t0 = performance.now();
  for (let i = 0; i < iterations; i++) forward();
  await gpu.sync();
  const msForward = (performance.now() - t0) / iterations;
  const cpuF = process.cpuUsage(c0);
  const cpuMsForward = (cpuF.user + cpuF.system) / 1000 / iterations;
  c0 = process.cpuUsage();
  t0 = performance.now();
  for (let i = 0; i < iterations; i++) both();
  await gpu.sync();
  const msBoth = (performance.now() - t0) / iterations;
  const cpu = process.cpuUsage(c0);
  const cpuMs = (cpu.user + cpu.system) / 1000 / iterations;
  let pairs = 0;
  for (let i = 0; i < T; i++) pairs += causal ? Math.min(S, qOffset + i + 1) : S;
  const fwdFlops = 4 * D * pairs * B * Hq, bwdFlops = 10 * D * pairs * B * Hq;
  const msBackward = Math.max(msBoth - msForward, 1e-9);
  const r: AttentionBench = {
    msForward,
    msBackward,
    gflopsForward: fwdFlops / msForward / 1e6,
    gflopsBackward: bwdFlops / msBackward / 1e6,
    gflops: (fwdFlops + bwdFlops) / msBoth / 1e6,
    cpuMsForward,
    cpuMs,
  };
  console.log(
    `attention B=${B} T=${T} S=${S} Hq=${Hq} Hkv=${Hkv} D=${D} ${causal ? "causal" : "bidir"}: ` +
      `fwd ${msForward.toFixed(1)} ms (${r.gflopsForward.toFixed(2)} GFLOP/s), ` +
      `bwd ${msBackward.toFixed(1)} ms (${r.gflopsBackward.toFixed(2)} GFLOP/s), ` +
      `fwd+bwd ${r.gflops.toFixed(2)} GFLOP/s; CPU ${cpuMsForward.toFixed(0)} ms per fwd, ` +
      `${cpuMs.toFixed(0)} ms per fwd+bwd ` +
      `(${gpu.adapterDescription})`,
  );
  for (const t of [q, k, v, dout]) t.dispose();
  return r;
}

if (import.meta.main) {
  const { values: a } = parseArgs({
    args: Deno.args,
    options: {
      t: { type: "string", default: "360" },
      s: { type: "string" },
      hq: { type: "string", default: "14" },
      hkv: { type: "string", default: "2" },
      d: { type: "string", default: "64" },
      bidirectional: { type: "boolean", default: false },
      iterations: { type: "string", default: "3" },
    },
  });
  await benchAttention({
    T: Number(a.t),
    S: a.s ? Number(a.s) : undefined,
    Hq: Number(a.hq),
    Hkv: Number(a.hkv),
    D: Number(a.d),
    causal: !a.bidirectional,
    iterations: Number(a.iterations),
  });
}
