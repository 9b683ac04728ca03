// A training stage behind one interface: what a run starts from, what trains, what it reads and
// how it scores a micro-batch. The trainer loop (trainer.ts) knows nothing else about stages:
//
//   openModel   → the starting model + processor (openSiqvl), adapters attached, storage dtypes
//   trainable   → freeze everything, unfreeze what this stage trains; [name, tensor] in order
//   openData    → a resumable training source of batches, held-out data for eval loss and
//                 generation eval
//   lossModel   → the step's loss of one micro-batch (+ optional statistics logged per step)
//
// Stages 1–2 (supervised.ts) are one implementation; a new stage (SFT on other data, a preference
// loss, RL) is a new implementation registered in stages.ts, not a branch in the loop.

import type { Gpu } from "../gpu/device.ts";
import type { JsonValue } from "../data/datasets/types.ts";
import type { SiqvlBundle } from "../models/factory.ts";
import type { SiqvlModel } from "../models/siqvl.ts";
import type { Tensor } from "../tensor/tensor.ts";
import type { TrainArgs } from "./args.ts";
import type { TrainerState } from "./checkpoint.ts";
import type { ExportInfo } from "./export.ts";
import type { GenSample } from "./gen_eval.ts";
import type { LossModel, StepBatch } from "./step.ts";

/** What a stage sees when it sets up. */
export interface StageContext {
  gpu: Gpu;
  args: TrainArgs;
  log: (msg: string) => void;
  /** trainer_state.json of the checkpoint being resumed, else null. */
  resumed: TrainerState | null;
}

/** A resumable stream of micro-batches (the data loader is one). */
export interface BatchSource<B> {
  /** The next batch; undefined when a finite source is exhausted. */
  next(): Promise<B | undefined>;
  /** Position after the last batch returned (JSON, stored in checkpoints). */
  state(): JsonValue;
  /** Continue after the batch whose `state()` this was. */
  restore(state: JsonValue): Promise<void>;
  /** Skip counts by reason, for the log. */
  report(): string;
  /** Skip counts by reason (dataset and loader together), for metrics and the progress line. */
  skipCounts?(): Record<string, number>;
  close(): Promise<void>;
}

/** A stage's data. */
export interface StageData<B> {
  /** The training stream (cycles passes; never ends). */
  train: BatchSource<B>;
  /** A fresh one-pass source over the held-out data for eval loss, or null for none. */
  evalSource: (() => BatchSource<B>) | null;
  /** Fixed held-out questions for generation eval (may be empty). */
  genSamples: GenSample[];
  /** Training samples in one pass (Infinity for generated data). */
  numTrain: number;
  /** Held-out samples (for the log). */
  numEval: number;
  description: string;
  close(): Promise<void>;
}

/** The model a stage starts from. */
export interface StageModel {
  bundle: SiqvlBundle;
  /** The previous stage's result it was loaded from (kept in trainer_state.json), or null. */
  from: string | null;
}

/** What a stage trains (the vision tower is always frozen; the projector always trains). */
export interface StagePlan {
  stage: number;
  /** How the language model is treated. */
  llm: "frozen" | "lora" | "full";
}

/** One training stage. */
export interface Stage<B extends StepBatch = StepBatch> {
  readonly id: number;
  readonly plan: StagePlan;
  /** What trains, in words (for the log). */
  describe(): string;
  openModel(ctx: StageContext): Promise<StageModel>;
  /** Freeze/unfreeze for this stage; the trainable tensors in a stable (state-dict) order. */
  trainable(model: SiqvlModel): [string, Tensor][];
  openData(ctx: StageContext, bundle: SiqvlBundle): Promise<StageData<B>>;
  lossModel(model: SiqvlModel): LossModel<B>;
  /** Stage facts for the model card (merged into the trainer's ExportInfo). */
  exportInfo?(): Partial<ExportInfo>;
}
