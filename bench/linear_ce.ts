// Fused linear + cross-entropy throughput at the Qwen2.5-0.5B head by default: N = 360 tokens,
// H = 896, V = 151,936, f32 and bf16 weights.
//
// Three cases, each timed from the call to the end of backward (one gpu.sync() at the end):
//   loss      no gradients: logits + online logsumexp             2·N·H·V FLOPs
//   +dh       h requires grad, frozen head: logits, then G · W    4·N·H·V
//   +dh +dW   h and w require grad (f32 head): also Gᵀ · h         6·N·H·V
// The gradients are produced during the forward (no logits recompute), so these are all the FLOPs.
// Also printed: process CPU time (lavapipe runs on the CPU; other load on the machine inflates
// wall time, not CPU time: GFLOP/CPU-s × cores is the rate on an idle machine).
//
//   deno run -A --unstable-webgpu bench/linear_ce.ts [--n 360] [--h 896] [--v 151936] \
//     [--dtypes f32,bf16]

import process from "node:process";
import { parseArgs } from "node:util";
import { Gpu } from "../src/gpu/device.ts";
import {
  type DType,
  f32ToBf16Bits,
  linearCrossEntropy,
  noGrad,
  Tensor,
} from "../src/tensor/mod.ts";

/** Shape of one benchmark run. */
export interface LinearCEBenchOptions {
  N?: number;
  H?: number;
  V?: number;
  dtypes?: ("f32" | "f16" | "bf16")[];
}

/** One timed case. */
export interface LinearCEBenchRow {
  dtype: DType;
  case: "loss" | "+dh" | "+dh +dW";
  ms: number;
  gflops: number;
  /** Process CPU milliseconds. */
  cpuMs: number;
}

// Raw bytes of a [rows, cols] matrix of uniform ±[0.002, 0.04] values in `dtype`.
function weights(rows: number, cols: number, dtype: DType, seed: number): Uint8Array {
  const n = rows * cols;
  const f = dtype === "f32" ? new Float32Array(n) : null;
  const b = dtype === "f32" ? null : new Uint16Array(n + (n & 1));
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const x = 0.002 + 0.038 * (s >>> 8) / 16777216;
    const v = s & 1 ? -x : x;
    if (f) f[i] = v;
    else b![i] = f32ToBf16Bits(v); // f16 benches reuse the bit pattern: only speed matters here
  }
  return f ? new Uint8Array(f.buffer) : new Uint8Array(b!.buffer, 0, n * 2);
}

function clearGrad(t: Tensor): void {
  t.grad?.dispose();
  t.grad = null;
}

/** Time the fused linear + cross-entropy; prints and returns one row per (dtype, case). */
export async function benchLinearCE(o: LinearCEBenchOptions = {}): Promise<LinearCEBenchRow[]> {
  const N = o.N ?? 360, H = o.H ?? 896, V = o.V ?? 151936;
  const dtypes = o.dtypes ?? ["f32", "bf16"];
  const gpu = await Gpu.get();
  const rows: LinearCEBenchRow[] = [];
  const hv = new Float32Array(weights(N, H, "f32", 5).buffer).map((x) => x * 25);
  const targets = Int32Array.from({ length: N }, (_, i) => (i * 7919) % V);
  targets[0] = -100;
  const h = Tensor.from(gpu, hv, [N, H]);
  const t = Tensor.from(gpu, targets, [N], "i32");
  for (const dtype of dtypes) {
    const w = Tensor.fromBytes(gpu, weights(V, H, dtype, 11), [V, H], dtype);
    // Warm-up on a small head of the same dtype compiles every pipeline.
    {
      const ws = Tensor.fromBytes(gpu, weights(512, H, dtype, 3), [512, H], dtype);
      const ts = Tensor.from(gpu, new Int32Array(N).fill(1), [N], "i32");
      h.requiresGrad = true;
      ws.requiresGrad = true;
      noGrad(() => linearCrossEntropy(h, ws, ts)).dispose();
      const l = linearCrossEntropy(h, ws, ts);
      l.backward();
      for (const x of [l, ws, ts]) x.dispose();
      clearGrad(h);
      await gpu.sync();
    }
    const cases: [LinearCEBenchRow["case"], boolean, boolean][] = [
      ["loss", false, false],
      ["+dh", true, false],
    ];
    if (dtype === "f32") cases.push(["+dh +dW", true, true]);
    for (const [name, gh, gw] of cases) {
      h.requiresGrad = gh;
      w.requiresGrad = gw;
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      const loss = linearCrossEntropy(h, w, t);
      if (gh || gw) loss.backward();
      await gpu.sync();
      const ms = performance.now() - t0;
      const cpu = process.cpuUsage(c0);
      const cpuMs = (cpu.user + cpu.system) / 1000;
      const flops = 2 * N * H * V * (1 + (gh ? 1 : 0) + (gw ? 1 : 0));
      const row: LinearCEBenchRow = { dtype, case: name, ms, gflops: flops / ms / 1e6, cpuMs };
      rows.push(row);
      console.log(
        `linear_ce N=${N} H=${H} V=${V} ${dtype} ${name}: ${ms.toFixed(0)} ms, ` +
          `${row.gflops.toFixed(2)} GFLOP/s (${(flops / cpuMs / 1e6).toFixed(2)} per CPU-s); ` +
          `loss ${(await loss.item()).toFixed(4)}`,
      );
      loss.dispose();
      clearGrad(h);
      clearGrad(w);
    }
    w.requiresGrad = false;
    w.dispose();
  }
  console.log(`(${gpu.adapterDescription})`);
  h.dispose();
  t.dispose();
  return rows;
}

if (import.meta.main) {
  const { values: a } = parseArgs({
    args: Deno.args,
    options: {
      n: { type: "string", default: "360" },
      h: { type: "string", default: "896" },
      v: { type: "string", default: "151936" },
      dtypes: { type: "string", default: "f32,bf16" },
    },
  });
  await benchLinearCE({
    N: Number(a.n),
    H: Number(a.h),
    V: Number(a.v),
    dtypes: a.dtypes!.split(",") as ("f32" | "f16" | "bf16")[],
  });
}
