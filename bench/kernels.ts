// Kernel benchmark (`deno task bench`): one table of GFLOP/s (GB/s for AdamW) per kernel family.
//
// Sections, each a function returning rows (add a family by adding one to SECTIONS):
//   matmul     linear(x [M, K], w [N, K]) at 512×896×4864, 1024³ and 360×896×151936 (the vocab
//              head), f32 and bf16 weights, timed end to end (operand staging included), next to
//              OpenBLAS sgemm through numpy (bench/numpy_matmul.py, 2 threads) for the same shapes
//   attention  bench/attention.ts: fused attention fwd + bwd, T = 360, 14 q / 2 kv heads, d = 64
//   linear-CE  bench/linear_ce.ts: fused linear + cross-entropy at 360×896×151936
//   adamw      bench/optim.ts: one AdamW step over 35M parameters
// Families whose bench file is missing are skipped. Timing: a warm-up call (shader compilation),
// then `iters` calls with a single gpu.sync() at the end. CPU time is the process's: lavapipe
// runs on the CPU, and other load on the machine inflates wall time but hardly CPU time, so
// GFLOP per CPU-second × cores estimates the idle-machine rate.
//
//   deno run -A --unstable-webgpu bench/kernels.ts [--only matmul,attention,...] [--no-numpy]
//     [--quick] [--variants] [--markdown]
// --variants: matmul rows for every GEMM variant (MATMUL_VARIANTS), not only the shipped choice.

import { parseArgs } from "node:util";
import { Gpu } from "../src/gpu/device.ts";
import { setGpuKernels } from "../src/tensor/variants.ts";
import { processCpuSeconds } from "../src/gpu/profile.ts";
import {
  f32ToBf16Bits,
  linear,
  noGrad,
  setMatmulTiles,
  Tensor,
  tuning,
} from "../src/tensor/mod.ts";

/** One line of the table. */
export interface BenchRow {
  family: string;
  kernel: string;
  shape: string;
  dtype: string;
  ms: number;
  rate: number;
  unit: "GFLOP/s" | "GB/s";
  /** Process CPU ms per call, where measured. */
  cpuMs?: number;
  /** Work per call in the rate's unit × 1e9 (FLOPs or bytes), for CPU-time rates. */
  work?: number;
  /** Reference rate (OpenBLAS) for the same shape, where there is one. */
  ref?: number;
  refCpuMs?: number;
}

/** A benchmark family: a name and a function producing rows. */
export interface BenchSection {
  name: string;
  run: (o: { quick: boolean; numpy: boolean; variants: boolean }) => Promise<BenchRow[]>;
}

const cpuMs = () => processCpuSeconds() * 1000;

// ---- matmul ----

/** [M, K, N] of the benchmarked products. */
export const MATMUL_SHAPES: [number, number, number][] = [
  [512, 896, 4864],
  [1024, 1024, 1024],
  [360, 896, 151936],
];

// A [rows, cols] weight in `dtype` with values ±[0.002, 0.04] (raw bytes, built without per-
// element tensor round trips).
function weightBytes(rows: number, cols: number, dtype: "f32" | "bf16"): Uint8Array {
  const n = rows * cols;
  const table = new Float32Array(4096);
  let s = 12345;
  for (let i = 0; i < table.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const x = 0.002 + 0.038 * (s >>> 8) / 16777216;
    table[i] = s & 1 ? -x : x;
  }
  if (dtype === "f32") {
    const f = new Float32Array(n);
    for (let i = 0; i < n; i++) f[i] = table[(i * 2654435761) >>> 20];
    return new Uint8Array(f.buffer);
  }
  const bits = Uint16Array.from(table, f32ToBf16Bits);
  const h = new Uint16Array(n);
  for (let i = 0; i < n; i++) h[i] = bits[(i * 2654435761) >>> 20];
  return new Uint8Array(h.buffer);
}

interface NumpyRow {
  M: number;
  K: number;
  N: number;
  ms: number;
  gflops: number;
  cpu_ms: number;
}

/** OpenBLAS sgemm (numpy, 2 threads) for the shapes; null when python3/numpy is unavailable. */
export async function numpyMatmul(shapes: [number, number, number][]): Promise<NumpyRow[] | null> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(Deno.env.toObject())) {
    if (k !== "OPENBLAS_CORETYPE" && k !== "OPENBLAS_L2_SIZE") env[k] = v;
  }
  env.OPENBLAS_NUM_THREADS = "2";
  env.OMP_NUM_THREADS = "2";
  try {
    const out = await new Deno.Command("python3", {
      args: [
        new URL("./numpy_matmul.py", import.meta.url).pathname,
        ...shapes.map((s) => s.join(",")),
      ],
      env,
      clearEnv: true,
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) {
      console.error(`numpy reference failed: ${new TextDecoder().decode(out.stderr).trim()}`);
      return null;
    }
    return new TextDecoder().decode(out.stdout).trim().split("\n").map((l) => JSON.parse(l));
  } catch (e) {
    console.error(`numpy reference unavailable: ${(e as Error).message}`);
    return null;
  }
}

/** Time linear(x [M, K], w [N, K]) end to end: `iters` calls, one sync. */
export async function benchLinear(
  M: number,
  K: number,
  N: number,
  dtype: "f32" | "bf16",
  iters: number,
): Promise<{ ms: number; cpuMs: number }> {
  const gpu = await Gpu.get();
  return await noGrad(async () => {
    const x = Tensor.fromBytes(gpu, weightBytes(M, K, "f32"), [M, K], "f32");
    const w = Tensor.fromBytes(gpu, weightBytes(N, K, dtype), [N, K], dtype);
    linear(x, w).dispose(); // warm-up: compile, staging textures
    await gpu.sync();
    const c0 = cpuMs(), t0 = performance.now();
    for (let i = 0; i < iters; i++) linear(x, w).dispose();
    await gpu.sync();
    const ms = (performance.now() - t0) / iters, c = (cpuMs() - c0) / iters;
    x.dispose();
    w.dispose();
    return { ms, cpuMs: c };
  });
}

/** GEMM variants --variants adds to the table (the default row is the shipped choice). */
export const MATMUL_VARIANTS: { name: string; apply: (gpu: Gpu) => () => void }[] = [
  { name: "default", apply: () => () => {} },
  // The texture-staged kernel (shaders/matmul.wgsl) with its lavapipe and its GPU tile shapes.
  ...[{ wg: 8, rows: 16 }, { wg: 64, rows: 4 }].map((tiles) => ({
    name: `texture wg ${tiles.wg} × rows ${tiles.rows}`,
    apply: (gpu: Gpu) => {
      setGpuKernels(gpu, false);
      setMatmulTiles(gpu, tiles);
      return () => {
        setGpuKernels(gpu, null);
        setMatmulTiles(gpu, null);
      };
    },
  })),
  // The workgroup-tiled storage-buffer kernel (shaders/gemm_tiled.wgsl).
  {
    name: "tiled 64×64 (GPU)",
    apply: (gpu) => {
      setGpuKernels(gpu, true);
      return () => setGpuKernels(gpu, null);
    },
  },
];

const matmulSection: BenchSection = {
  name: "matmul",
  run: async ({ quick, numpy, variants }) => {
    const shapes = quick ? MATMUL_SHAPES.slice(0, 2) : MATMUL_SHAPES;
    const ref = numpy ? await numpyMatmul(shapes) : null;
    const rows: BenchRow[] = [];
    const gpu = await Gpu.get();
    for (const [M, K, N] of shapes) {
      const flops = 2 * M * K * N;
      const iters = Math.max(1, Math.min(5, Math.round(20e9 / flops)));
      for (const variant of variants ? MATMUL_VARIANTS : MATMUL_VARIANTS.slice(0, 1)) {
        for (const dtype of ["f32", "bf16"] as const) {
          const undo = variant.apply(gpu);
          let r: { ms: number; cpuMs: number };
          try {
            r = await benchLinear(M, K, N, dtype, iters);
          } finally {
            undo();
          }
          const np = ref?.find((x) => x.M === M && x.K === K && x.N === N);
          rows.push({
            family: "matmul",
            kernel: variant.name === "default" ? "linear x·wᵀ" : `linear x·wᵀ, ${variant.name}`,
            shape: `${M}×${K}×${N}`,
            dtype: `w ${dtype}`,
            ms: r.ms,
            rate: flops / r.ms / 1e6,
            unit: "GFLOP/s",
            cpuMs: r.cpuMs,
            work: flops / 1e9,
            ref: np?.gflops,
            refCpuMs: np?.cpu_ms,
          });
          printRow(rows[rows.length - 1]);
        }
      }
    }
    return rows;
  },
};

// ---- matmul input gradient: transposed GEMM vs packed transpose ----

/** [M, K, N] of the input-gradient products (the LoRA step's frozen MLP weights). */
export const GRAD_SHAPES: [number, number, number][] = [
  [351, 896, 4864],
  [351, 4864, 896],
];

/** Time dx of linear(x [M, K], w [N, K] bf16) = g [M, N] · w (forward timed and subtracted). */
async function benchInputGrad(
  M: number,
  K: number,
  N: number,
  transposed: boolean,
  iters: number,
): Promise<{ ms: number; cpuMs: number }> {
  const gpu = await Gpu.get();
  const prev = tuning.transposedGemm;
  tuning.transposedGemm = transposed;
  try {
    const x = Tensor.fromBytes(gpu, weightBytes(M, K, "f32"), [M, K], "f32");
    x.requiresGrad = true;
    const w = Tensor.fromBytes(gpu, weightBytes(N, K, "bf16"), [N, K], "bf16");
    const g = Tensor.fromBytes(gpu, weightBytes(M, N, "f32"), [M, N], "f32");
    const once = () => {
      const y = linear(x, w);
      y.backward(g.view(g.shape));
      y.dispose();
      x.grad!.dispose();
      x.grad = null;
    };
    once(); // warm-up
    await gpu.sync();
    const c0 = cpuMs(), t0 = performance.now();
    for (let i = 0; i < iters; i++) once();
    await gpu.sync();
    const both = { ms: performance.now() - t0, cpu: cpuMs() - c0 };
    const c1 = cpuMs(), t1 = performance.now();
    for (let i = 0; i < iters; i++) noGrad(() => linear(x, w)).dispose();
    await gpu.sync();
    const fwd = { ms: performance.now() - t1, cpu: cpuMs() - c1 };
    for (const t of [x, w, g]) t.dispose();
    return { ms: (both.ms - fwd.ms) / iters, cpuMs: (both.cpu - fwd.cpu) / iters };
  } finally {
    tuning.transposedGemm = prev;
  }
}

const matmulGradSection: BenchSection = {
  name: "matmul-grad",
  run: async ({ quick }) => {
    const rows: BenchRow[] = [];
    for (const [M, K, N] of quick ? GRAD_SHAPES.slice(0, 1) : GRAD_SHAPES) {
      const flops = 2 * M * K * N;
      for (const transposed of [false, true]) {
        const r = await benchInputGrad(M, K, N, transposed, quick ? 1 : 3);
        rows.push({
          family: "matmul",
          kernel: `input grad g·w, ${transposed ? "transposed GEMM" : "packed transpose"}`,
          shape: `${M}×${K}×${N}`,
          dtype: "w bf16",
          ms: r.ms,
          rate: flops / r.ms / 1e6,
          unit: "GFLOP/s",
          cpuMs: r.cpuMs,
          work: flops / 1e9,
        });
        printRow(rows[rows.length - 1]);
      }
    }
    return rows;
  },
};

// ---- other families (their bench files live next to this one) ----

async function exists(rel: string): Promise<boolean> {
  try {
    await Deno.stat(new URL(rel, import.meta.url));
    return true;
  } catch {
    return false;
  }
}

const attentionSection: BenchSection = {
  name: "attention",
  run: async ({ quick, variants }) => {
    if (!(await exists("./attention.ts"))) return [];
    const { benchAttention } = await import("./attention.ts");
    const gpu = await Gpu.get();
    const rows: BenchRow[] = [];
    // --variants: the forward of attention.wgsl vs the workgroup-tiled one (attention_tiled.wgsl).
    for (const gpuKernels of variants ? [false, true] : [null]) {
      setGpuKernels(gpu, gpuKernels);
      let r;
      try {
        r = await benchAttention({ T: 360, Hq: 14, Hkv: 2, D: 64, iterations: quick ? 1 : 3 });
      } finally {
        setGpuKernels(gpu, null);
      }
      const ms = r.msForward + r.msBackward;
      const fwd = gpuKernels === null ? "" : gpuKernels ? ", tiled fwd (GPU)" : ", register fwd";
      rows.push({
        family: "attention",
        kernel: `fused fwd + bwd (causal)${fwd}`,
        shape: "T 360, 14q/2kv, d 64",
        dtype: "f32",
        ms,
        rate: r.gflops,
        unit: "GFLOP/s",
        cpuMs: r.cpuMs,
        work: (r.gflops * ms) / 1e3,
      });
      printRow(rows[rows.length - 1]);
    }
    return rows;
  },
};

const linearCESection: BenchSection = {
  name: "linear-CE",
  run: async ({ quick }) => {
    if (!(await exists("./linear_ce.ts"))) return [];
    const { benchLinearCE } = await import("./linear_ce.ts");
    const N = quick ? 64 : 360;
    const rows = await benchLinearCE({ N, H: 896, V: 151936, dtypes: ["f32", "bf16"] });
    return rows.map((r) => ({
      family: "linear-CE",
      kernel: `fused linear + CE (${r.case})`,
      shape: `${N}×896×151936`,
      dtype: `w ${r.dtype}`,
      ms: r.ms,
      rate: r.gflops,
      unit: "GFLOP/s" as const,
      cpuMs: r.cpuMs,
      work: (r.gflops * r.ms) / 1e3,
    }));
  },
};

const adamwSection: BenchSection = {
  name: "adamw",
  run: async ({ quick }) => {
    if (!(await exists("./optim.ts"))) return [];
    const { benchAdamW } = await import("./optim.ts");
    const params = quick ? 5_000_000 : 35_000_000;
    const r = await benchAdamW(params, quick ? 2 : 5);
    return [{
      family: "adamw",
      kernel: "AdamW step (+ clip coefficient)",
      shape: `${(params / 1e6).toFixed(0)}M params`,
      dtype: "f32",
      ms: r.msPerStep,
      rate: r.gbps,
      unit: "GB/s",
    }];
  },
};

/** Every benchmark family, in table order. */
export const SECTIONS: BenchSection[] = [
  matmulSection,
  matmulGradSection,
  attentionSection,
  linearCESection,
  adamwSection,
];

// ---- output ----

function fmt(x: number | undefined, digits = 1): string {
  return x === undefined || !Number.isFinite(x) ? "–" : x.toFixed(digits);
}

function perCpu(r: BenchRow): number | undefined {
  return r.cpuMs && r.work ? r.work / (r.cpuMs / 1e3) : undefined;
}

function printRow(r: BenchRow): void {
  const ratio = r.ref ? ` (${(100 * r.rate / r.ref).toFixed(1)}% of OpenBLAS ${fmt(r.ref)})` : "";
  console.log(
    `  ${r.family} ${r.kernel} ${r.shape} ${r.dtype}: ${fmt(r.ms)} ms, ${fmt(r.rate, 2)} ` +
      `${r.unit}${ratio}; ${fmt(perCpu(r), 2)} per CPU-s`,
  );
}

/** The rows as a markdown table. */
export function markdown(rows: BenchRow[]): string {
  const head = "| family | kernel | shape | dtype | ms | rate | per CPU-s | OpenBLAS 2 thr " +
    "| % of OpenBLAS (wall / CPU) |\n|---|---|---|---|---|---|---|---|---|";
  const lines = rows.map((r) => {
    const refCpu = r.refCpuMs && r.work ? r.work / (r.refCpuMs / 1e3) : undefined;
    const pc = perCpu(r);
    const pct = r.ref
      ? `${fmt((100 * r.rate) / r.ref)}% / ${pc && refCpu ? fmt((100 * pc) / refCpu) : "–"}%`
      : "";
    return `| ${r.family} | ${r.kernel} | ${r.shape} | ${r.dtype} | ${fmt(r.ms)} | ` +
      `${fmt(r.rate, 2)} ${r.unit} | ${fmt(pc, 2)} | ${r.ref ? fmt(r.ref) + " GFLOP/s" : ""} | ` +
      `${pct} |`;
  });
  return [head, ...lines].join("\n");
}

async function loadAverage(): Promise<string> {
  try {
    return (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3).join(" ");
  } catch {
    return "?";
  }
}

if (import.meta.main) {
  const { values: a } = parseArgs({
    args: Deno.args,
    options: {
      only: { type: "string" },
      "no-numpy": { type: "boolean", default: false },
      quick: { type: "boolean", default: false },
      variants: { type: "boolean", default: false },
      markdown: { type: "boolean", default: false },
    },
  });
  const only = a.only?.split(",").map((s) => s.trim().toLowerCase());
  const gpu = await Gpu.get();
  console.log(`adapter: ${gpu.describe()}`);
  console.log(
    `load average at start: ${await loadAverage()} (${navigator.hardwareConcurrency} CPUs)`,
  );
  const rows: BenchRow[] = [];
  for (const s of SECTIONS) {
    if (only && !only.includes(s.name.toLowerCase())) continue;
    console.log(`== ${s.name}`);
    try {
      rows.push(...await s.run({ quick: a.quick, numpy: !a["no-numpy"], variants: a.variants }));
    } catch (e) {
      console.error(`${s.name} failed: ${(e as Error).stack ?? e}`);
    }
  }
  console.log(`load average at end: ${await loadAverage()}`);
  console.log();
  console.log(markdown(rows));
}
