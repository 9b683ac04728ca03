// Stage 3: supervised fine-tuning on chain-of-thought data, from a stage-2 result.
//
//   vision tower frozen; projector + LLM train — LoRA (the stage-2 adapters continue; new ones
//   are attached when the stage-2 model had none) or full (adapters the stage-2 model carries are
//   merged first); default lr 1e-5. (Stage 4 merges incoming adapters and attaches new ones, so
//   its adapters-off reference is exactly the model it starts from.) Labels cover the reasoning, the answer and <|im_end|>
//   (SiqvlProcessor.encode); --reasoning_format decides how rationale + answer are written.
//   Data: shapes_cot (generated), LLaVA-style JSON/JSONL whose answers carry reasoning
//   (LLaVA-CoT-100k), question/rationale/answer records (JSONL/parquet, columns by flags),
//   FineVision subsets (open_reasoning.ts).
// Shared with stage 4: where the run starts ({@link continuedModel}) and the data opener.

import type { Batch } from "../data/collator.ts";
import { openReasoningDatasets, type RecordKind } from "../data/datasets/open_reasoning.ts";
import type { ReasoningFormat } from "../data/reasoning.ts";
import { openSiqvl, type SiqvlBundle } from "../models/factory.ts";
import type { SiqvlModel } from "../models/siqvl.ts";
import type { Tensor } from "../tensor/tensor.ts";
import type { TrainArgs } from "./args.ts";
import { hasFinalModel } from "./checkpoint.ts";
import type { Stage, StageContext, StageData, StageModel, StagePlan } from "./stage.ts";
import type { LossModel } from "./step.ts";
import {
  applyStagePlan,
  describePlan,
  findPreviousStage,
  frozenStorageDtype,
  loaderData,
  prepareStorage,
  supervisedLoss,
} from "./supervised.ts";

/** Stages 3 and 4 train the LLM with LoRA or fully. */
export function continuedPlan(a: Pick<TrainArgs, "stage" | "use_lora">): StagePlan {
  return { stage: a.stage, llm: a.use_lora ? "lora" : "full" };
}

/** The datasets of a stage-3/4 run (opened once, before the weights, so bad data fails fast). */
export function openStageDatasets(
  a: TrainArgs,
  kind: RecordKind,
  imageSize: number,
): ReturnType<typeof openReasoningDatasets> {
  return openReasoningDatasets({
    dataPath: a.data_path,
    subSets: a.sub_sets,
    subSetsWeights: a.sub_sets_weights,
    seed: a.seed,
    maxSamples: a.max_samples,
    maxEvalSamples: a.max_eval_samples,
    imageSize,
    kind,
    format: a.reasoning_format as ReasoningFormat,
    columns: {
      image: a.image_column ?? undefined,
      question: a.question_column ?? undefined,
      rationale: a.rationale_column ?? undefined,
      answer: a.answer_column ?? undefined,
      chosen: a.chosen_column ?? undefined,
      rejected: a.rejected_column ?? undefined,
    },
  });
}

/**
 * Opens a stage's datasets in two steps: `check()` before the weights load (a bad --data_path,
 * a missing column fail at once), `open(imageSize)` once the model's image size is known.
 * Record files are read once; generated data is cheap to build again at the right size.
 */
export class StageDatasets {
  #cached: Awaited<ReturnType<typeof openReasoningDatasets>> | null = null;
  constructor(readonly args: TrainArgs, readonly kind: RecordKind) {}

  async check(): Promise<void> {
    const ds = await openStageDatasets(this.args, this.kind, 48);
    if (!/^shapes/.test(this.args.data_path)) this.#cached = ds;
  }

  async open(imageSize: number): ReturnType<typeof openReasoningDatasets> {
    const ds = this.#cached ?? await openStageDatasets(this.args, this.kind, imageSize);
    this.#cached = null;
    return ds;
  }
}

/**
 * The previous stage's result a stage-3/4 run starts from (resume: the one the run started
 * from), opened with its adapters handled for `plan` and weights in their storage dtypes.
 * Stage 4 takes --stage_3_checkpoint_path, else --stage_2_checkpoint_path, else the latest
 * stage-3 run, else the latest stage-2 run.
 */
export async function continuedModel(ctx: StageContext, plan: StagePlan): Promise<StageModel> {
  const a = ctx.args;
  let from: string;
  if (ctx.resumed?.from_dir && hasFinalModel(ctx.resumed.from_dir)) from = ctx.resumed.from_dir;
  else if (a.stage === 3) {
    from = findPreviousStage(a, 2, a.stage_2_checkpoint_path, "--stage_2_checkpoint_path", ctx.log);
  } else if (a.stage_3_checkpoint_path || !a.stage_2_checkpoint_path) {
    try {
      from = findPreviousStage(
        a,
        3,
        a.stage_3_checkpoint_path,
        "--stage_3_checkpoint_path",
        ctx.log,
      );
    } catch (e) {
      if (a.stage_3_checkpoint_path) throw e;
      ctx.log(`[siqvl] no stage-3 result under ${a.output_dir}; looking for a stage-2 one`);
      from = findPreviousStage(a, 2, null, "--stage_2_checkpoint_path", ctx.log);
    }
  } else {
    from = findPreviousStage(a, 2, a.stage_2_checkpoint_path, "--stage_2_checkpoint_path", ctx.log);
  }
  const bundle = await openSiqvl(ctx.gpu, { checkpoint: from }, { log: ctx.log });
  const { model } = bundle;
  try {
    if (model.projector.factor !== a.pixel_shuffle_factor) {
      throw new Error(
        `--pixel_shuffle_factor ${a.pixel_shuffle_factor} differs from the model's factor ` +
          `${model.projector.factor} (${from})`,
      );
    }
    let has = model.text.loraLinears().length > 0;
    if (has && plan.llm === "lora" && a.stage === 4) {
      // Stage 4 compares the policy with its starting point: fold the incoming adapters into
      // the (frozen) weights and train fresh ones, so "adapters off" IS the starting model.
      ctx.log(`[siqvl] merging the LoRA adapters of ${from}; stage 4 trains new ones`);
      model.text.mergeLora();
      has = false;
    }
    if (plan.llm === "lora" && has) {
      ctx.log(`[siqvl] the LoRA adapters of ${from} continue training (--lora_* flags unused)`);
    } else if (plan.llm === "lora") {
      model.text.attachLora(
        { r: a.lora_r, alpha: a.lora_alpha, dropout: a.lora_dropout },
        a.lora_target_modules,
      );
      model.text.initialize(ctx.gpu, a.seed);
    } else if (has) {
      ctx.log(`[siqvl] merging the LoRA adapters of ${from} into the LLM for full fine-tuning`);
      model.text.mergeLora();
    }
    await prepareStorage(model, plan, frozenStorageDtype(a));
  } catch (e) {
    bundle.dispose();
    throw e;
  }
  return { bundle, from };
}

/** Stage 3. */
export class CotSftStage implements Stage<Batch> {
  readonly id = 3;
  readonly plan: StagePlan;
  readonly #data: StageDatasets;
  constructor(readonly args: TrainArgs) {
    this.plan = continuedPlan(args);
    this.#data = new StageDatasets(args, "reasoning");
  }

  describe(): string {
    return `${describePlan(this.plan)}; chain-of-thought SFT (${this.args.reasoning_format})`;
  }

  async openModel(ctx: StageContext): Promise<StageModel> {
    await this.#data.check();
    return await continuedModel(ctx, this.plan);
  }

  trainable(model: SiqvlModel): [string, Tensor][] {
    return applyStagePlan(model, this.plan);
  }

  async openData(_ctx: StageContext, bundle: SiqvlBundle): Promise<StageData<Batch>> {
    const ds = await this.#data.open(bundle.processor.image.size);
    return await loaderData(this.args, bundle, ds);
  }

  lossModel(model: SiqvlModel): LossModel<Batch> {
    return supervisedLoss(model);
  }
}
