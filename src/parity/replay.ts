// Replays the reference fixture's 10-step training sequences (`train.stage1|full|lora.*` in
// tests/fixtures/tiny-a/expected.safetensors) through the trainer's own step code (StepRunner +
// AdamW + GPU clipping), so the fixture checks what training actually runs.
//
// Each setting starts from the fixture's initial weights and uses the whole fixture batch at
// every step (no shuffling, no accumulation), a constant learning rate, AdamW (0.9, 0.999, 1e-8,
// wd 0.01 on tensors with ndim ≥ 2 only) and global-norm clipping at 1.0:
//   losses[k]     = loss with the weights after k updates (the forward of step k)
//   grad_norms[k] = global L2 norm of every trainable gradient of step k, before clipping
//   final_loss    = loss after the last update; final weights = every trainable tensor then.
//
// Importing this module registers the sections `train.stage1`, `train.full` and `train.lora`
// with the fixture runner (src/parity/fixture.ts, cli/fixture.ts).

import { join } from "node:path";
import { type Batch, batchOf } from "../data/collator.ts";
import { isLoraParam } from "../nn/lora.ts";
import type { SiqvlModel } from "../models/siqvl.ts";
import { type FixtureContext, type FixtureInputs, registerFixtureSection } from "./fixture.ts";
import { loadPeftAdapter } from "../models/peft.ts";
import { noGrad } from "../tensor/tensor.ts";
import { AdamW } from "../train/optimizer.ts";
import { applyStagePlan, supervisedLoss } from "../train/supervised.ts";
import type { StagePlan } from "../train/stage.ts";
import { StepRunner } from "../train/step.ts";

/** The fixture's three settings. */
export type ReplaySetting = "stage1" | "full" | "lora";

/** Learning rate of each setting (siqvl_config.json train.settings.*.lr). */
export const REPLAY_LR: Record<ReplaySetting, number> = { stage1: 1e-3, full: 1e-4, lora: 1e-3 };

/** What a replay produced. */
export interface ReplayResult {
  setting: ReplaySetting;
  losses: number[];
  gradNorms: number[];
  finalLoss: number;
  /** Trainable tensors after the last update, by model parameter name. */
  finalWeights: Map<string, Float32Array>;
  /** Trainable tensor names without weight decay. */
  noDecay: string[];
  numTrainableParams: number;
  numTrainableTensors: number;
}

/** Options of {@link replayTraining}. */
export interface ReplayOptions {
  setting: ReplaySetting;
  steps?: number;
  lr?: number;
  weightDecay?: number;
  maxGradNorm?: number;
}

/**
 * Run the fixture's training sequence for one setting on `model` (already holding the fixture's
 * initial weights; for "lora" with its adapters attached and loaded). Changes the model's
 * weights; callers reload between settings.
 */
export async function replayTraining(
  model: SiqvlModel,
  batch: Batch,
  opts: ReplayOptions,
): Promise<ReplayResult> {
  const steps = opts.steps ?? 10;
  const lr = opts.lr ?? REPLAY_LR[opts.setting];
  const plan: StagePlan = {
    stage: opts.setting === "stage1" ? 1 : 2,
    llm: opts.setting === "stage1" ? "frozen" : opts.setting,
  };
  const trainable = applyStagePlan(model, plan);
  model.eval(); // dropout 0 in the fixture; eval mode makes that explicit
  const opt = new AdamW(trainable, {
    beta1: 0.9,
    beta2: 0.999,
    eps: 1e-8,
    weightDecay: opts.weightDecay ?? 0.01,
    maxGradNorm: opts.maxGradNorm ?? 1.0,
  });
  const lossModel = supervisedLoss(model);
  const runner = new StepRunner(model.gpu, lossModel, opt, steps);
  const mb = batch;
  try {
    for (let k = 0; k < steps; k++) await runner.run(k + 1, [mb], lr);
    const stats = await runner.drain();
    const finalLoss = await noGrad(async () => {
      const out = lossModel.lossOf(mb);
      const v = await out.loss.item();
      out.loss.dispose();
      for (const t of out.dispose ?? []) t.dispose();
      return v;
    });
    const finalWeights = new Map<string, Float32Array>();
    for (const [name, t] of trainable) finalWeights.set(name, await t.readF32());
    return {
      setting: opts.setting,
      losses: stats.map((s) => s.loss),
      gradNorms: stats.map((s) => s.gradNorm),
      finalLoss,
      finalWeights,
      noDecay: opt.noDecayNames,
      numTrainableParams: opt.numParams,
      numTrainableTensors: trainable.length,
    };
  } finally {
    runner.dispose();
    opt.dispose();
  }
}

/**
 * The fixture file's key for a model parameter name: "projector.*" as is, text weights without
 * the "text_model." prefix, LoRA weights under PEFT's "base_model.model." prefix.
 */
export function fixtureKey(modelName: string): string {
  if (modelName.startsWith("text_model.")) {
    const rest = modelName.slice("text_model.".length);
    return isLoraParam(rest) ? `base_model.model.${rest}` : rest;
  }
  return modelName;
}

/** The fixture batch (inputs.safetensors) as a trainer batch. */
export function fixtureBatch(inputs: FixtureInputs): Batch {
  return batchOf({
    ...inputs,
    pixels: inputs.pixelValues,
    pixelShape: inputs.pixelShape as [number, number, number, number],
  });
}

/** A fresh fixture model for a setting (LoRA: with the fixture's adapter loaded). */
export async function fixtureModelFor(
  ctx: FixtureContext,
  setting: ReplaySetting,
): Promise<SiqvlModel> {
  const model = await ctx.loadModel();
  if (setting === "lora") {
    const lc = (ctx.config.lora ?? {}) as Record<string, unknown>;
    await loadPeftAdapter(ctx.gpu, model.text, join(ctx.dir, (lc.dir as string) ?? "lora"));
  }
  return model;
}

/** Replay one setting in a fixture context and record `train.<setting>.*` outputs. */
export async function replayFixtureSection(
  ctx: FixtureContext,
  setting: ReplaySetting,
): Promise<ReplayResult> {
  const model = await fixtureModelFor(ctx, setting);
  try {
    const train = (ctx.config.train ?? {}) as { settings?: Record<string, { lr?: number }> };
    const lr = train.settings?.[setting]?.lr ?? REPLAY_LR[setting];
    const r = await replayTraining(model, fixtureBatch(ctx.inputs), { setting, lr });
    const pre = `train.${setting}`;
    ctx.put(`${pre}.losses`, [r.losses.length], Float32Array.from(r.losses));
    ctx.put(`${pre}.grad_norms`, [r.gradNorms.length], Float32Array.from(r.gradNorms));
    ctx.put(`${pre}.final_loss`, [], Float32Array.of(r.finalLoss));
    if (setting !== "full") {
      for (const [name, w] of r.finalWeights) {
        const p = model.parameter(name);
        ctx.put(`${pre}.final.${fixtureKey(name)}`, [...p.shape], w);
      }
    }
    return r;
  } finally {
    model.dispose();
  }
}

for (const s of ["stage1", "full", "lora"] as const) {
  registerFixtureSection(`train.${s}`, async (ctx) => void (await replayFixtureSection(ctx, s)));
}
