// Real-size model benchmark: SigLIP2-base-patch16-224 + Qwen2.5-0.5B-Instruct shapes with random
// bf16 weights (written once outside git to $SIQVL_BENCH_DIR, default /tmp/siqvl-real), loaded
// with frozen weights kept in bf16. Reports load time, GPU bytes, one forward (image + 300
// tokens, with loss) and greedy generation (prefill seconds, decode tokens/s over 32 tokens).
//
//   deno run -A --unstable-webgpu bench/model_real.ts [--tokens 300] [--new 32] [--json out.json]
//       [--variant base,new] [--profile] [--no-forward]
//
// --variant: generation once per variant in this process: "base" stages every weight per call
// (as before issue 14), "new" pins the frozen 2-D weights (pinMatmulWeight: staged into textures
// once, reused by prefill and every decode step). --profile: each generation runs under the
// profiler (src/gpu/profile.ts) and its tables are printed. CPU seconds are reported next to the
// wall times (the machine is shared).

import { parseArgs } from "node:util";
import { join } from "node:path";
import { Gpu } from "../src/gpu/device.ts";
import { writeSafetensors } from "../src/io/safetensors.ts";
import type { TensorData } from "../src/io/tensor_input.ts";
import { noGrad, Tensor, tidy } from "../src/tensor/mod.ts";
import { buildSiqvl } from "../src/models/checkpoint.ts";
import { generate } from "../src/infer/generate.ts";
import { pinMatmulWeight, unpinMatmulWeight } from "../src/tensor/mod.ts";
import {
  formatProfile,
  peakRssBytes,
  processCpuSeconds,
  startProfile,
  stopProfile,
} from "../src/gpu/profile.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    tokens: { type: "string", default: "300" },
    new: { type: "string", default: "32" },
    json: { type: "string" },
    dir: { type: "string" },
    variant: { type: "string", default: "new" },
    profile: { type: "boolean", default: false },
    "no-forward": { type: "boolean", default: false },
  },
});
const TOKENS = Number(values.tokens), NEW = Number(values.new);
const DIR = values.dir ?? Deno.env.get("SIQVL_BENCH_DIR") ?? "/tmp/siqvl-real";

// ---- real shapes (FACTS §2.1, §3.1) ----
const VISION = {
  model_type: "siglip_vision_model",
  hidden_size: 768,
  intermediate_size: 3072,
  num_hidden_layers: 12,
  num_attention_heads: 12,
  num_channels: 3,
  image_size: 224,
  patch_size: 16,
  hidden_act: "gelu_pytorch_tanh",
  layer_norm_eps: 1e-6,
  torch_dtype: "bfloat16",
};
const TEXT = {
  model_type: "qwen2",
  vocab_size: 151936,
  hidden_size: 896,
  intermediate_size: 4864,
  num_hidden_layers: 24,
  num_attention_heads: 14,
  num_key_value_heads: 2,
  max_position_embeddings: 32768,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000,
  tie_word_embeddings: true,
  hidden_act: "silu",
  bos_token_id: 151643,
  eos_token_id: 151645,
  torch_dtype: "bfloat16",
};

// Random bf16 values uniform in ±scale (or a constant), generated when the writer asks.
function bf16Tensor(shape: number[], seed: number, scale: number, constant?: number): TensorData {
  return {
    dtype: "BF16",
    shape,
    data: () => {
      const n = shape.reduce((a, b) => a * b, 1);
      const out = new Uint16Array(n);
      const f = new Float32Array(1), u = new Uint32Array(f.buffer);
      if (constant !== undefined) {
        f[0] = constant;
        out.fill(u[0] >>> 16);
        return out;
      }
      let x = (seed * 2654435761) >>> 0 || 1;
      for (let i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >>> 17;
        x ^= x << 5;
        f[0] = ((x >>> 0) / 4294967296 - 0.5) * 2 * scale;
        out[i] = u[0] >>> 16;
      }
      return out;
    },
  };
}

async function writeRandomCheckpoints(): Promise<void> {
  let seed = 1;
  const w = (shape: number[], scale = 0.02) => bf16Tensor(shape, seed++, scale);
  const ones = (n: number) => bf16Tensor([n], 0, 0, 1);
  const zeros = (n: number) => bf16Tensor([n], 0, 0, 0);
  // Vision (incl. the unused pooling head, as real checkpoints have it).
  const v = VISION, d = v.hidden_size, i = v.intermediate_size, p = v.patch_size;
  const vt: Record<string, TensorData> = {
    "vision_model.embeddings.patch_embedding.weight": w([d, 3, p, p]),
    "vision_model.embeddings.patch_embedding.bias": zeros(d),
    "vision_model.embeddings.position_embedding.weight": w([(v.image_size / p) ** 2, d]),
    "vision_model.post_layernorm.weight": ones(d),
    "vision_model.post_layernorm.bias": zeros(d),
    "vision_model.head.probe": w([1, 1, d]),
    "vision_model.head.attention.in_proj_weight": w([3 * d, d]),
  };
  for (let l = 0; l < v.num_hidden_layers; l++) {
    const pre = `vision_model.encoder.layers.${l}.`;
    for (const n of ["q_proj", "k_proj", "v_proj", "out_proj"]) {
      vt[`${pre}self_attn.${n}.weight`] = w([d, d]);
      vt[`${pre}self_attn.${n}.bias`] = zeros(d);
    }
    vt[`${pre}mlp.fc1.weight`] = w([i, d]);
    vt[`${pre}mlp.fc1.bias`] = zeros(i);
    vt[`${pre}mlp.fc2.weight`] = w([d, i]);
    vt[`${pre}mlp.fc2.bias`] = zeros(d);
    for (const n of ["layer_norm1", "layer_norm2"]) {
      vt[`${pre}${n}.weight`] = ones(d);
      vt[`${pre}${n}.bias`] = zeros(d);
    }
  }
  await Deno.mkdir(join(DIR, "vision"), { recursive: true });
  await Deno.writeTextFile(join(DIR, "vision/config.json"), JSON.stringify(VISION, null, 2));
  await writeSafetensors(join(DIR, "vision/model.safetensors"), vt, { format: "pt" });
  // Text.
  const t = TEXT,
    h = t.hidden_size,
    hd = h / t.num_attention_heads,
    kv = t.num_key_value_heads * hd;
  const tt: Record<string, TensorData> = {
    "model.embed_tokens.weight": w([t.vocab_size, h]),
    "model.norm.weight": ones(h),
  };
  for (let l = 0; l < t.num_hidden_layers; l++) {
    const pre = `model.layers.${l}.`;
    tt[`${pre}input_layernorm.weight`] = ones(h);
    tt[`${pre}post_attention_layernorm.weight`] = ones(h);
    tt[`${pre}self_attn.q_proj.weight`] = w([h, h]);
    tt[`${pre}self_attn.q_proj.bias`] = w([h]);
    tt[`${pre}self_attn.k_proj.weight`] = w([kv, h]);
    tt[`${pre}self_attn.k_proj.bias`] = w([kv]);
    tt[`${pre}self_attn.v_proj.weight`] = w([kv, h]);
    tt[`${pre}self_attn.v_proj.bias`] = w([kv]);
    tt[`${pre}self_attn.o_proj.weight`] = w([h, h]);
    tt[`${pre}mlp.gate_proj.weight`] = w([t.intermediate_size, h]);
    tt[`${pre}mlp.up_proj.weight`] = w([t.intermediate_size, h]);
    tt[`${pre}mlp.down_proj.weight`] = w([h, t.intermediate_size]);
  }
  await Deno.mkdir(join(DIR, "text"), { recursive: true });
  await Deno.writeTextFile(join(DIR, "text/config.json"), JSON.stringify(TEXT, null, 2));
  await writeSafetensors(join(DIR, "text/model.safetensors"), tt, { format: "pt" });
}

const mib = (n: number) => `${(n / 2 ** 20).toFixed(0)} MiB`;
const sec = (ms: number) => ms / 1000;

if (!(await Deno.stat(join(DIR, "text/model.safetensors")).catch(() => null))) {
  const t = performance.now();
  console.log(`writing random bf16 checkpoints to ${DIR} …`);
  await writeRandomCheckpoints();
  console.log(`  done in ${sec(performance.now() - t).toFixed(1)} s`);
}

const gpu = await Gpu.get();
console.log(`device: ${gpu.describe()}`);
const t0 = performance.now();
const model = await buildSiqvl(gpu, {
  vision: join(DIR, "vision"),
  text: join(DIR, "text"),
  projector: { factor: 2 },
});
await gpu.sync();
const loadS = sec(performance.now() - t0);
const dtypes = new Map<string, number>();
for (const [, p] of model.namedParameters()) {
  dtypes.set(p.value.dtype, (dtypes.get(p.value.dtype) ?? 0) + p.value.bytes);
}
const paramBytes = model.parameterBytes();
console.log(
  `load ${loadS.toFixed(1)} s; parameters ${mib(paramBytes)} (` +
    [...dtypes].map(([k, v]) => `${k} ${mib(v)}`).join(", ") +
    `); pool live ${mib(gpu.memory().live)}`,
);

// One image + TOKENS tokens (the image's pad run inside), labels on the second half.
const n = model.imageTokensPerImage, cfg = model.config;
const ids: number[] = [];
let x = 12345;
const rnd = () => (x = (x * 1103515245 + 12345) >>> 0) % 150000;
for (let i = 0; i < 5; i++) ids.push(rnd());
ids.push(cfg.visionStartTokenId, ...new Array(n).fill(cfg.imageTokenId), cfg.visionEndTokenId);
while (ids.length < TOKENS) ids.push(rnd());
const labels = ids.map((v, i) => (i >= TOKENS / 2 ? v : -100));
const pixels = Tensor.from(
  gpu,
  Float32Array.from({ length: 3 * 224 * 224 }, (_, i) => Math.sin(i) * 0.9),
  [1, 3, 224, 224],
);

// Forward (no tape): warm-up pass compiles the pipelines, the second one is timed.
const forward = async () => {
  const t = performance.now();
  const loss = noGrad(() =>
    tidy(() =>
      model.forward({ inputIds: ids, batch: 1, seqLen: TOKENS, labels, pixelValues: pixels }).loss!
    )
  );
  const v = await loss.item();
  loss.dispose();
  return { s: sec(performance.now() - t), loss: v };
};
let warm = { s: NaN, loss: NaN }, fwd = { s: NaN, loss: NaN };
if (!values["no-forward"]) {
  warm = await forward();
  fwd = await forward();
  console.log(
    `forward (image + ${TOKENS} tokens, loss ${fwd.loss.toFixed(3)}): ${
      fwd.s.toFixed(2)
    } s (first ${warm.s.toFixed(1)} s)`,
  );
}

const prompt = ids.slice(0, TOKENS);
const weights = model.namedParameters().map(([, p]) => p.value).filter((w) => w.ndim === 2);
interface GenRow {
  variant: string;
  prefillSeconds: number;
  decodeTokensPerSecond: number;
  decodeSteps: number;
  cpuSeconds: number;
  poolPeakBytes: number;
  peakRssBytes: number;
}
const gens: GenRow[] = [];
// A warm-up generation of 2 tokens compiles the prefill and decode pipelines.
await generate(model, { inputIds: [prompt], pixelValues: pixels }, {
  maxNewTokens: 2,
  stopTokenIds: [],
});
for (const variant of values.variant!.split(",")) {
  if (variant !== "base" && variant !== "new") throw new Error(`--variant ${variant}?`);
  if (variant === "new") {
    // Pinning stages each weight on its first use: a one-time cost at load (as generate/serve
    // pay it), timed apart so prefill and decode below are the steady state.
    weights.forEach(pinMatmulWeight);
    const t0 = performance.now();
    await generate(model, { inputIds: [prompt], pixelValues: pixels }, {
      maxNewTokens: 2,
      stopTokenIds: [],
    });
    console.log(`stage the pinned weights once: ${((performance.now() - t0) / 1000).toFixed(2)} s`);
  }
  gpu.pool.resetPeak();
  if (values.profile) {
    await startProfile(gpu);
  }
  const c0 = processCpuSeconds();
  const res = await generate(model, { inputIds: [prompt], pixelValues: pixels }, {
    maxNewTokens: NEW,
    stopTokenIds: [],
  });
  const cpu = processCpuSeconds() - c0;
  if (values.profile) console.log(formatProfile(await stopProfile(gpu)));
  const tokS = res.stats.decodeSteps / res.stats.decodeSeconds;
  gens.push({
    variant,
    prefillSeconds: res.stats.prefillSeconds,
    decodeTokensPerSecond: tokS,
    decodeSteps: res.stats.decodeSteps,
    cpuSeconds: cpu,
    poolPeakBytes: gpu.memory().peak,
    peakRssBytes: peakRssBytes(),
  });
  console.log(
    `generate (${variant}): prefill ${res.stats.prefillSeconds.toFixed(2)} s, ` +
      `${res.tokens[0].length} tokens, decode ${
        tokS.toFixed(2)
      } tokens/s (${res.stats.decodeSteps} ` +
      `steps in ${res.stats.decodeSeconds.toFixed(1)} s); ${cpu.toFixed(1)} CPU-s; pool peak ` +
      `${mib(gpu.memory().peak)}, process peak RSS ${mib(peakRssBytes())}`,
  );
  if (variant === "new") weights.forEach(unpinMatmulWeight);
}
const mem = gpu.memory();
const rss = Deno.memoryUsage().rss;
console.log(`pool peak ${mib(mem.peak)}, live ${mib(mem.live)}; process RSS ${mib(rss)}`);
const last = gens[gens.length - 1];

const report = {
  device: gpu.describe(),
  load_seconds: loadS,
  parameter_bytes: paramBytes,
  parameter_bytes_by_dtype: Object.fromEntries(dtypes),
  forward_tokens: TOKENS,
  forward_seconds: fwd.s,
  forward_first_seconds: warm.s,
  prefill_seconds: last.prefillSeconds,
  decode_tokens: last.decodeSteps,
  decode_tokens_per_second: last.decodeTokensPerSecond,
  generations: gens,
  pool_peak_bytes: mem.peak,
  process_rss_bytes: rss,
};
if (values.json) await Deno.writeTextFile(values.json, JSON.stringify(report, null, 2) + "\n");
console.log(JSON.stringify(report));
pixels.dispose();
model.dispose();
