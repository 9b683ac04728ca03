// The reasoning demo: stages 3 and 4 on top of the demo's stage-2 model, no downloads.
//
//   0. the demo's stage-2 model under <dir>/runs (trained first by runDemo when absent);
//   1. stage 3: chain-of-thought SFT on generated shapes scenes (cot_shapes.ts: counting one
//      colour, left/right, leftmost — answers that need a few written-out steps);
//   2. stage 4 --po_loss sigmoid: DPO on generated preference pairs (preference.ts), LoRA with
//      the adapters-off reference;
//   3. stage 4 --rl grpo: GRPO with the exact-match reward, from the DPO result.
// Every stage runs through cli/train.ts's code path (flags → runTraining). Held-out data comes
// from seeds never trained on. The last three lines:
//   cot accuracy: <before> -> <after> (<n> held-out questions)      greedy, answer extracted by
//                                                                   the reasoning format
//   preference accuracy: <before> -> <after> (<n> held-out pairs)   β·log π/π_ref of chosen
//                                                                   above rejected (TRL's
//                                                                   rewards/accuracies)
//   grpo reward: <before> -> <after> (<n> held-out prompts)         mean exact-match reward of
//                                                                   sampled completions

import { join } from "node:path";
import { type CotShapesSample, generateCotShapesSample } from "../data/datasets/cot_shapes.ts";
import { ShapesPreferenceDataset } from "../data/datasets/preference.ts";
import { ImagePool } from "../data/image_pool.ts";
import type { SiqvlProcessor } from "../data/processor.ts";
import { extractAnswer, type ReasoningFormat } from "../data/reasoning.ts";
import { Gpu } from "../gpu/device.ts";
import { openSiqvl } from "../models/factory.ts";
import type { SiqvlModel } from "../models/siqvl.ts";
import { noGrad } from "../tensor/tensor.ts";
import { findRuns, hasFinalModel } from "../train/checkpoint.ts";
import { generationEval } from "../train/gen_eval.ts";
import { rollout } from "../train/grpo_stage.ts";
import { PairSource, rowLogProbs } from "../train/preference_stage.ts";
import { formatDuration } from "../train/progress.ts";
import { writeMetricPlots } from "../train/metric_plot.ts";
import { BUILTIN_REWARDS, normalizeAnswer } from "../train/rewards.ts";
import type { RunResult } from "../train/trainer.ts";
import { runDemo } from "./demo.ts";

/** Everything the reasoning demo can be tuned with. */
export interface ReasoningDemoConfig {
  imageSize: number;
  format: ReasoningFormat;
  seed: number;
  stage3: { steps: number; lr: number; batch: number };
  dpo: { steps: number; lr: number; pairs: number; beta: number };
  grpo: {
    steps: number;
    lr: number;
    prompts: number;
    generations: number;
    maxCompletion: number;
    temperature: number;
  };
  heldOut: { questions: number; pairs: number; prompts: number };
  /** Longest generated answer at evaluation (tokens). */
  maxNewTokens: number;
}

/** Settings for a 2-core machine with lavapipe. */
export const REASONING_DEMO_CONFIG: ReasoningDemoConfig = {
  imageSize: 48,
  format: "think",
  seed: 42,
  stage3: { steps: 200, lr: 4e-3, batch: 16 },
  dpo: { steps: 20, lr: 2e-3, pairs: 8, beta: 0.1 },
  grpo: { steps: 15, lr: 5e-3, prompts: 4, generations: 4, maxCompletion: 48, temperature: 1 },
  heldOut: { questions: 200, pairs: 100, prompts: 32 },
  maxNewTokens: 48,
};

/** Held-out seeds (never a training seed). */
const HELD_OUT_SEED = 0x7e57;

/** The demo's results. */
export interface ReasoningDemoResult {
  cot: { before: number; after: number; n: number };
  preference: { before: number; after: number; n: number };
  grpo: { before: number; after: number; n: number };
  runs: { stage3: RunResult; dpo: RunResult; grpo: RunResult };
  seconds: number;
}

/** Greedy answers to held-out CoT questions: the share whose extracted answer is right. */
export async function cotAccuracy(
  model: SiqvlModel,
  processor: SiqvlProcessor,
  samples: CotShapesSample[],
  format: ReasoningFormat,
  maxNewTokens: number,
): Promise<{ accuracy: number; examples: string[] }> {
  const pool = new ImagePool({ workers: 0 });
  try {
    const r = await generationEval(
      model,
      processor,
      pool,
      samples.map((s) => ({
        id: s.id,
        image: s.image,
        question: s.question,
        reference: s.finalAnswer,
      })),
      { maxNewTokens, temperature: 0, numBeams: 1, batchSize: 50 },
    );
    let right = 0;
    r.rows.forEach((row) => {
      const a = normalizeAnswer(extractAnswer(row.answer, format));
      if (a && a === normalizeAnswer(row.reference)) right++;
    });
    return {
      accuracy: right / r.rows.length,
      examples: r.rows.slice(0, 3).map((x) => `Q: ${x.question} → ${JSON.stringify(x.answer)}`),
    };
  } finally {
    pool.close();
  }
}

/**
 * Held-out preference accuracy: the share of pairs whose chosen completion gets the larger
 * implicit reward β·(log π − log π_ref). `lora`: the reference is the model with its adapters
 * off; without adapters the policy is its own reference (every reward 0, accuracy 0).
 */
export async function preferenceAccuracy(
  model: SiqvlModel,
  processor: SiqvlProcessor,
  n: number,
  cfg: ReasoningDemoConfig,
): Promise<number> {
  const ds = new ShapesPreferenceDataset({
    seed: HELD_OUT_SEED,
    imageSize: cfg.imageSize,
    length: n,
    format: cfg.format,
  });
  const src = new PairSource(ds, processor, 25, undefined, 1);
  const lora = model.text.loraLinears().length > 0;
  const was = model.training;
  model.eval();
  let wins = 0, total = 0;
  try {
    for (let b = await src.next(); b; b = await src.next()) {
      const pol = await noGrad(() => rowLogProbs(model, b!)).read().then((x) => x);
      let ref = pol;
      if (lora) {
        model.text.setLoraEnabled(false);
        try {
          ref = await noGrad(() => rowLogProbs(model, b!)).read();
        } finally {
          model.text.setLoraEnabled(true);
        }
      }
      for (let i = 0; i < b.pairs; i++) {
        if (pol[i] - ref[i] > pol[b.pairs + i] - ref[b.pairs + i]) wins++;
        total++;
      }
    }
  } finally {
    model.train(was);
    await src.close();
  }
  return wins / total;
}

/** Mean exact-match reward of sampled completions on held-out prompts. */
export async function grpoReward(
  model: SiqvlModel,
  processor: SiqvlProcessor,
  samples: CotShapesSample[],
  cfg: ReasoningDemoConfig,
): Promise<number> {
  const pool = new ImagePool({ workers: 0 });
  try {
    let sum = 0, count = 0;
    for (let i = 0; i < samples.length; i += 8) {
      const chunk = samples.slice(i, i + 8);
      const images = await Promise.all(chunk.map((s) => pool.process(s.image, processor.image)));
      const r = await rollout(
        model,
        processor,
        chunk,
        images,
        {
          numGenerations: cfg.grpo.generations,
          temperature: cfg.grpo.temperature,
          topP: 1,
          maxCompletionLength: cfg.maxNewTokens,
        },
        [{ name: "exact", fn: BUILTIN_REWARDS.exact }],
        null,
        cfg.format,
        HELD_OUT_SEED + i,
      );
      sum += r.total.reduce((s, v) => s + v, 0);
      count += r.total.length;
    }
    return sum / count;
  } finally {
    pool.close();
  }
}

/** Run the reasoning demo under `outDir` (the stage-2 demo's directory). */
export async function runReasoningDemo(
  outDir: string,
  train: (argv: string[], keepModel: boolean) => Promise<RunResult>,
  cfg: ReasoningDemoConfig = REASONING_DEMO_CONFIG,
  log: (s: string) => void = console.log,
): Promise<ReasoningDemoResult> {
  const t0 = performance.now();
  const runs = join(outDir, "runs");
  const vision = join(outDir, "models", "vision"), text = join(outDir, "models", "text");
  let stage2 = findRuns(runs, vision, text, 2, hasFinalModel)[0]?.stageDir;
  if (!stage2) {
    log(`[demo:reasoning] no stage-2 demo model under ${runs}: training it first (deno task demo)`);
    const d = await runDemo(outDir, train, undefined, log);
    stage2 = d.stage2.finalDir!;
  }
  log(`[demo:reasoning] starting from the stage-2 demo model ${stage2}`);
  const gpu = await Gpu.get();
  const held = Array.from(
    { length: cfg.heldOut.questions },
    (_, i) => generateCotShapesSample(HELD_OUT_SEED, i, cfg.imageSize, cfg.format),
  );
  const prompts = held.slice(0, cfg.heldOut.prompts);
  const common = [
    "--vision_model_name_or_path",
    vision,
    "--text_model_name_or_path",
    text,
    "--output_dir",
    runs,
    "--use_lora",
    "--reasoning_format",
    cfg.format,
    "--gradient_accumulation_steps",
    "1",
    "--no_bf16",
    "--seed",
    String(cfg.seed),
    "--max_eval_samples",
    "0",
    "--gen_samples",
    "0",
    "--dataloader_num_workers",
    "0",
    "--no_gradient_checkpointing",
    "--report_to",
    "tensorboard",
    "--save_total_limit",
    "1",
  ];
  const steps = (n: number, logEvery: number) => [
    "--max_steps",
    String(n),
    "--logging_steps",
    String(logEvery),
    "--save_steps",
    String(n),
  ];

  // ---- stage 3 ----
  const cotBefore = await (async () => {
    const b = await openSiqvl(gpu, { checkpoint: stage2 });
    try {
      return (await cotAccuracy(b.model, b.processor, held, cfg.format, cfg.maxNewTokens)).accuracy;
    } finally {
      b.dispose();
    }
  })();
  log(`[demo:reasoning] cot accuracy of the stage-2 model: ${cotBefore.toFixed(3)}`);
  const s3 = await train([
    ...common,
    "--stage",
    "3",
    "--data_path",
    `shapes_cot:${cfg.imageSize}`,
    "--stage_2_checkpoint_path",
    stage2,
    "--per_device_train_batch_size",
    String(cfg.stage3.batch),
    "--learning_rate",
    String(cfg.stage3.lr),
    ...steps(cfg.stage3.steps, 25),
  ], true);
  let cotAfter: number;
  {
    const r = await cotAccuracy(s3.model!, s3.processor!, held, cfg.format, cfg.maxNewTokens);
    cotAfter = r.accuracy;
    for (const e of r.examples) log(`[demo:reasoning]   ${e}`);
    s3.model!.dispose();
  }
  log(`[demo:reasoning] cot accuracy after stage 3: ${cotAfter.toFixed(3)}`);

  // ---- stage 4: DPO ----
  const prefBefore = await (async () => {
    const b = await openSiqvl(gpu, { checkpoint: s3.finalDir! });
    try {
      b.model.text.mergeLora(); // the DPO starting point: policy = reference
      return await preferenceAccuracy(b.model, b.processor, cfg.heldOut.pairs, cfg);
    } finally {
      b.dispose();
    }
  })();
  const dpo = await train([
    ...common,
    "--stage",
    "4",
    "--po_loss",
    "sigmoid",
    "--beta",
    String(cfg.dpo.beta),
    "--data_path",
    `shapes_preference:${cfg.imageSize}`,
    "--stage_3_checkpoint_path",
    s3.finalDir!,
    "--per_device_train_batch_size",
    String(cfg.dpo.pairs),
    "--learning_rate",
    String(cfg.dpo.lr),
    ...steps(cfg.dpo.steps, 5),
  ], true);
  const prefAfter = await preferenceAccuracy(dpo.model!, dpo.processor!, cfg.heldOut.pairs, cfg);
  dpo.model!.dispose();
  log(`[demo:reasoning] preference accuracy ${prefBefore.toFixed(3)} -> ${prefAfter.toFixed(3)}`);

  // ---- stage 4: GRPO ----
  const grpoBefore = await (async () => {
    const b = await openSiqvl(gpu, { checkpoint: dpo.finalDir! });
    try {
      return await grpoReward(b.model, b.processor, prompts, cfg);
    } finally {
      b.dispose();
    }
  })();
  const g = cfg.grpo;
  const grpo = await train([
    ...common,
    "--stage",
    "4",
    "--rl",
    "grpo",
    "--reward_funcs",
    "exact",
    "--data_path",
    `shapes_cot:${cfg.imageSize}`,
    "--stage_3_checkpoint_path",
    dpo.finalDir!,
    "--per_device_train_batch_size",
    String(g.prompts * g.generations),
    "--num_generations",
    String(g.generations),
    "--max_completion_length",
    String(g.maxCompletion),
    "--temperature",
    String(g.temperature),
    "--learning_rate",
    String(g.lr),
    ...steps(g.steps, 5),
  ], true);
  const grpoAfter = await grpoReward(grpo.model!, grpo.processor!, prompts, cfg);
  grpo.model!.dispose();

  const seconds = (performance.now() - t0) / 1000;
  log(`[demo:reasoning] runs: ${s3.finalDir}, ${dpo.finalDir}, ${grpo.finalDir}`);
  for (const r of [dpo, grpo]) {
    const plots = await writeMetricPlots(r.stageDir);
    log(`[demo:reasoning] plots: ${plots.join(", ")}`);
  }
  log(`[demo:reasoning] metrics: ${s3.metricsPath}, ${dpo.metricsPath}, ${grpo.metricsPath}`);
  log(`[demo:reasoning] total time ${formatDuration(seconds)}`);
  const f = (x: number) => x.toFixed(3);
  log(`cot accuracy: ${f(cotBefore)} -> ${f(cotAfter)} (${held.length} held-out questions)`);
  log(
    `preference accuracy: ${f(prefBefore)} -> ${
      f(prefAfter)
    } (${cfg.heldOut.pairs} held-out pairs)`,
  );
  log(`grpo reward: ${f(grpoBefore)} -> ${f(grpoAfter)} (${prompts.length} held-out prompts)`);
  return {
    cot: { before: cotBefore, after: cotAfter, n: held.length },
    preference: { before: prefBefore, after: prefAfter, n: cfg.heldOut.pairs },
    grpo: { before: grpoBefore, after: grpoAfter, n: prompts.length },
    runs: { stage3: s3, dpo, grpo },
    seconds,
  };
}
