// Training-step benchmark: step time, tokens/s and peak GPU bytes for stage 1 (projector),
// stage 2 LoRA (r 64, α 16, all seven projections) and stage 2 full, through the trainer's own
// step (StepRunner: forward + backward + GPU clipping + AdamW, gradient checkpointing on).
//
//   real:  SigLIP2-base-patch16-224 + Qwen2.5-0.5B shapes, random bf16 weights (frozen weights
//          stay bf16; trainable ones f32), 1 image (49 image tokens) + 300 text tokens
//   ci:    the demo's small model, batch 32 of ~30-token shapes prompts
//
//   deno run -A --unstable-webgpu bench/train_step.ts [--scale ci|real|both] [--steps 2]
//       [--only stage1,lora,full] [--json out.json] [--md bench/RESULTS_train.md]
//       [--profile] [--profile_json prefix] [--variant base,new] [--activation_budget_mb 1024]
//
// --variant: run each configuration once per variant, in this process (before/after in one run
// on a shared machine): "base" = the kernel paths of before issue 14 (checkpointing always
// recomputes, the loss reads every position, …; see VARIANTS), "new" = the current defaults with
// checkpointing chosen by memory (--activation_budget_mb of kept activations, default 1024).
// --profile: the timed steps run under the profiler (src/gpu/profile.ts; one compute pass per
// dispatch): tables per kernel family, model part and kernel are printed, and the report is
// written to <prefix>-<scale>-<config>-<variant>.json (default prefix /tmp/siqvl-profile).
// Each row also gives the CPU seconds of the timed steps (lavapipe runs the shaders on this
// process's threads) and the process's peak RSS.
// The first step of each configuration compiles its shaders and is reported separately; the
// timed steps end with a readback (the GPU has finished). Peak bytes are the buffer pool's peak
// during the timed steps (weights + optimizer state + activations + gradients).

import { parseArgs } from "node:util";
import { join } from "node:path";
import { Gpu } from "../src/gpu/device.ts";
import { buildSiqvl } from "../src/models/checkpoint.ts";
import type { SiqvlModel } from "../src/models/siqvl.ts";
import { AdamW } from "../src/train/optimizer.ts";
import { applyStagePlan, prepareStorage, supervisedLoss } from "../src/train/supervised.ts";
import { type BatchArrays, batchOf } from "../src/data/collator.ts";
import { StepRunner } from "../src/train/step.ts";
import type { StagePlan } from "../src/train/stage.ts";
import { writeRandomText, writeRandomVision } from "../src/demo/tiny_models.ts";
import { DEMO_CONFIG, prepareDemoModels } from "../src/demo/demo.ts";
import { LORA_TARGETS } from "../src/models/qwen2.ts";
import { TextTokenizer } from "../src/data/tokenizer.ts";
import {
  checkpointStats,
  setCheckpointBudget,
  type Tuning,
  tuning,
  TUNING_DEFAULTS,
} from "../src/tensor/mod.ts";
import {
  formatProfile,
  instrumentMethod,
  instrumentParts,
  peakRssBytes,
  processCpuSeconds,
  SIQVL_PART_METHODS,
  siqvlPart,
  startProfile,
  stopProfile,
} from "../src/gpu/profile.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    scale: { type: "string", default: "both" },
    steps: { type: "string", default: "1" },
    only: { type: "string" },
    json: { type: "string" },
    md: { type: "string" },
    dir: { type: "string" },
    profile: { type: "boolean", default: false },
    profile_json: { type: "string", default: "/tmp/siqvl-profile" },
    variant: { type: "string", default: "new" },
    activation_budget_mb: { type: "string", default: "1024" },
  },
  strict: true,
});
const STEPS = Number(values.steps);
if (!(Number.isInteger(STEPS) && STEPS >= 1)) throw new Error("--steps must be an integer >= 1");
const SCALES = values.scale === "both" ? ["ci", "real"] : [values.scale!];
for (const s of SCALES) if (s !== "ci" && s !== "real") throw new Error(`--scale ${s}?`);
const ONLY = values.only?.split(",") ?? ["stage1", "lora", "full"];
const DIR = values.dir ?? "/tmp/siqvl-train-bench";
const BUDGET = Number(values.activation_budget_mb) * 2 ** 20;
if (!(BUDGET >= 0)) throw new Error("--activation_budget_mb must be a number >= 0");

/** Kernel-path switches and checkpoint budget of each variant. */
const VARIANTS: Record<string, { tuning: Partial<Tuning>; budget: number }> = {
  base: { tuning: { compactLossRows: false, transposedGemm: false }, budget: 0 },
  new: { tuning: { ...TUNING_DEFAULTS }, budget: BUDGET },
};
const VARIANT_LIST = values.variant!.split(",");
for (const v of VARIANT_LIST) {
  if (!VARIANTS[v]) throw new Error(`--variant ${v}? (${Object.keys(VARIANTS).join(", ")})`);
}

interface Row {
  scale: string;
  config: string;
  variant: string;
  /** CPU seconds per timed step. */
  cpuSec: number;
  /** Checkpointed layer calls per step that kept their tape / recomputed. */
  kept?: number;
  recomputed?: number;
  params: number;
  trainable: number;
  tokens: number;
  firstStepSec: number;
  stepSec: number;
  tokensPerSec: number;
  peakBytes: number;
  /** Process peak RSS (VmHWM) after the configuration ran. */
  peakRssBytes: number;
  loss: number;
  dispatches?: number;
  error?: string;
}

const gpu = await Gpu.get();
console.log(`device: ${gpu.describe()}`);

async function realModels(): Promise<{ vision: string; text: string }> {
  const vision = join(DIR, "vision"), text = join(DIR, "text");
  const ok = (d: string) => {
    try {
      return Deno.statSync(join(d, "model.safetensors")).isFile;
    } catch {
      return false;
    }
  };
  if (!ok(vision)) {
    console.log(`writing random bf16 SigLIP2-base-patch16-224 weights to ${vision}`);
    await writeRandomVision(
      vision,
      {
        imageSize: 224,
        patchSize: 16,
        hidden: 768,
        layers: 12,
        heads: 12,
        intermediate: 3072,
      },
      { seed: 1 },
      "BF16",
    );
  }
  if (!ok(text)) {
    console.log(`writing random bf16 Qwen2.5-0.5B weights to ${text} (about 1 GB)`);
    await writeRandomText(
      text,
      {
        vocabSize: 151936,
        hidden: 896,
        layers: 24,
        heads: 14,
        kvHeads: 2,
        intermediate: 4864,
        eosTokenId: 151645,
        padTokenId: 151643,
        ropeTheta: 1e6,
        maxPositions: 32768,
      },
      { seed: 2 },
      "BF16",
    );
  }
  return { vision, text };
}

// One image + `textTokens` text tokens; the last third of the text is supervised.
function realBatch(model: SiqvlModel, textTokens: number): BatchArrays {
  const n = model.imageTokensPerImage;
  const c = model.config;
  const ids: number[] = [
    c.visionStartTokenId,
    ...new Array(n).fill(c.imageTokenId),
    c.visionEndTokenId,
  ];
  let x = 12345;
  for (let i = 0; i < textTokens; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    ids.push(x % 150000);
  }
  const t = ids.length;
  const labels = ids.map((id, i) => (i >= t - Math.floor(textTokens / 3) ? id : -100));
  const S = c.vision.imageSize;
  const px = new Float32Array(3 * S * S);
  for (let i = 0; i < px.length; i++) px[i] = Math.sin(i * 0.37);
  return {
    batch: 1,
    seqLen: t,
    inputIds: Int32Array.from(ids),
    attentionMask: new Int32Array(t).fill(1),
    labels: Int32Array.from(labels),
    pixels: px,
    pixelShape: [1, 3, S, S],
  };
}

// A batch of shapes-like prompts for the CI model: ~30 tokens each.
function ciBatch(model: SiqvlModel, b: number): BatchArrays {
  const n = model.imageTokensPerImage, c = model.config, t = n + 26;
  const ids = new Int32Array(b * t), labels = new Int32Array(b * t).fill(-100);
  for (let r = 0; r < b; r++) {
    for (let j = 0; j < t; j++) {
      const id = j === 0
        ? c.visionStartTokenId
        : j <= n
        ? c.imageTokenId
        : j === n + 1
        ? c.visionEndTokenId
        : (r * 31 + j * 7) % 250;
      ids[r * t + j] = id;
      if (j >= t - 3) labels[r * t + j] = id;
    }
  }
  const S = c.vision.imageSize;
  const px = new Float32Array(b * 3 * S * S);
  for (let i = 0; i < px.length; i++) px[i] = Math.cos(i * 0.11);
  return {
    batch: b,
    seqLen: t,
    inputIds: ids,
    attentionMask: new Int32Array(b * t).fill(1),
    labels,
    pixels: px,
    pixelShape: [b, 3, S, S],
  };
}

async function bench(
  scale: string,
  config: string,
  dirs: { vision: string; text: string },
  makeBatch: (m: SiqvlModel) => BatchArrays,
  variant: string,
): Promise<Row> {
  const plan: StagePlan = {
    stage: config === "stage1" ? 1 : 2,
    llm: config === "stage1" ? "frozen" : config === "lora" ? "lora" : "full",
  };
  const row: Row = {
    scale,
    config,
    variant,
    cpuSec: NaN,
    params: 0,
    trainable: 0,
    tokens: 0,
    firstStepSec: NaN,
    stepSec: NaN,
    tokensPerSec: NaN,
    peakBytes: NaN,
    peakRssBytes: NaN,
    loss: NaN,
  };
  let model: SiqvlModel | null = null;
  let opt: AdamW | null = null;
  let runner: StepRunner | null = null;
  try {
    let ids = {};
    try {
      const tok = await TextTokenizer.fromDir(dirs.text);
      ids = {
        imageTokenId: tok.requireId("<|image_pad|>"),
        visionStartTokenId: tok.requireId("<|vision_start|>"),
        visionEndTokenId: tok.requireId("<|vision_end|>"),
      };
    } catch { /* no tokenizer.json: Qwen2.5's ids */ }
    model = await buildSiqvl(gpu, { vision: dirs.vision, text: dirs.text, seed: 0, ...ids });
    if (plan.llm === "lora") {
      model.text.attachLora({ r: 64, alpha: 16, dropout: 0.05 }, LORA_TARGETS);
      model.text.initialize(gpu, 0);
    }
    await prepareStorage(model, plan, "bf16");
    const trainable = applyStagePlan(model, plan);
    // Checkpointing on; the variant's budget decides how many layers really recompute.
    model.text.gradientCheckpointing = true;
    model.train(true);
    row.params = model.numParameters();
    row.trainable = trainable.reduce((s, [, t]) => s + t.size, 0);
    opt = new AdamW(trainable);
    runner = new StepRunner(gpu, supervisedLoss(model), opt, STEPS + 1);
    const mb = batchOf(makeBatch(model));
    row.tokens = mb.numTokens;
    let t = performance.now();
    await runner.run(1, [mb], 1e-5);
    await runner.drain();
    row.firstStepSec = (performance.now() - t) / 1000;
    const undo = values.profile
      ? [
        instrumentParts(model, siqvlPart, SIQVL_PART_METHODS),
        instrumentMethod(opt, "update", "optimizer"),
      ]
      : [];
    if (values.profile) await startProfile(gpu);
    const d0 = gpu.dispatches;
    gpu.pool.resetPeak();
    checkpointStats(true);
    const cpu0 = processCpuSeconds();
    t = performance.now();
    for (let s = 0; s < STEPS; s++) await runner.run(2 + s, [mb], 1e-5);
    const stats = await runner.drain();
    row.stepSec = (performance.now() - t) / 1000 / STEPS;
    row.cpuSec = (processCpuSeconds() - cpu0) / STEPS;
    row.dispatches = Math.round((gpu.dispatches - d0) / STEPS);
    const ck = checkpointStats(true);
    row.kept = ck.kept / STEPS;
    row.recomputed = ck.recomputed / STEPS;
    row.tokensPerSec = row.tokens / row.stepSec;
    row.peakBytes = gpu.memory().peak;
    row.loss = stats[stats.length - 1].loss;
    if (values.profile) {
      const report = await stopProfile(gpu);
      undo.forEach((f) => f());
      console.log(
        `\n${scale} ${config} (${variant}), ${STEPS} profiled step(s):\n${formatProfile(report)}\n`,
      );
      const file = `${values.profile_json}-${scale}-${config}-${variant}.json`;
      await Deno.writeTextFile(file, JSON.stringify(report, null, 2));
      console.log(`profile written to ${file}`);
    }
  } catch (e) {
    row.error = (e as Error).message.split("\n")[0].slice(0, 160);
  } finally {
    runner?.dispose();
    opt?.dispose();
    model?.dispose();
  }
  row.peakRssBytes = peakRssBytes();
  const fmt = (x: number, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : "–");
  console.log(
    `${scale} ${config} (${variant}): ${
      row.error
        ? `FAILED: ${row.error}`
        : `first step ${fmt(row.firstStepSec)} s, step ${fmt(row.stepSec, 3)} s ` +
          `(${fmt(row.cpuSec, 1)} CPU-s, ${row.dispatches} dispatches, checkpointed layers ` +
          `kept ${row.kept} / recomputed ${row.recomputed}), ${
            fmt(row.tokensPerSec, 1)
          } tok/s, peak ${(row.peakBytes / 2 ** 20).toFixed(0)} MiB (process peak RSS ${
            (row.peakRssBytes / 2 ** 20).toFixed(0)
          } MiB), ` +
          `loss ${fmt(row.loss, 4)}`
    }`,
  );
  return row;
}

const rows: Row[] = [];
for (const scale of SCALES) {
  const dirs = scale === "real"
    ? await realModels()
    : await prepareDemoModels(join(DIR, "ci"), DEMO_CONFIG);
  for (const config of ONLY) {
    for (const variant of VARIANT_LIST) {
      const v = VARIANTS[variant];
      const prevBudget = setCheckpointBudget(v.budget);
      const saved = { ...tuning };
      Object.assign(tuning, v.tuning);
      try {
        rows.push(
          await bench(
            scale,
            config,
            dirs,
            (m) => (scale === "real" ? realBatch(m, 300) : ciBatch(m, 32)),
            variant,
          ),
        );
      } finally {
        Object.assign(tuning, saved);
        setCheckpointBudget(prevBudget);
      }
    }
  }
}

if (values.json) {
  await Deno.writeTextFile(values.json, JSON.stringify({ device: gpu.describe(), rows }, null, 2));
}
if (values.md) {
  const mib = (b: number) => (Number.isFinite(b) ? (b / 2 ** 20).toFixed(0) : "–");
  const f = (x: number, d: number) => (Number.isFinite(x) ? x.toFixed(d) : "–");
  const lines = [
    "| scale | config | variant | params | trainable | tokens/step | first step (s, incl. compile) | step (s) | CPU-s / step | tokens/s | peak GPU MiB | peak RSS MiB | note |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ...rows.map((r) =>
      `| ${r.scale} | ${r.config} | ${r.variant} | ${(r.params / 1e6).toFixed(1)}M | ${
        (r.trainable / 1e6).toFixed(2)
      }M | ` +
      `${r.tokens} | ${f(r.firstStepSec, 1)} | ${f(r.stepSec, 2)} | ${f(r.cpuSec, 1)} | ` +
      `${f(r.tokensPerSec, 1)} | ` +
      `${mib(r.peakBytes)} | ${mib(r.peakRssBytes)} | ${
        r.error ? `failed: ${r.error.replace(/\|/g, "/")}` : ""
      } |`
    ),
  ];
  console.log(lines.join("\n"));
  await Deno.writeTextFile(values.md, `Device: ${gpu.describe()}\n\n${lines.join("\n")}\n`);
}
