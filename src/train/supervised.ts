// Stages 1 and 2: supervised next-token training on (image, conversation) data.
//
//   stage 1: vision tower + LLM frozen (eval mode); projector trains; lr 1e-3. The model is
//            built fresh from a SigLIP and a Qwen2 checkpoint with a new projector.
//   stage 2: vision tower frozen; projector + LLM train — with --use_lora only the adapters
//            (r 64, α 16, dropout 0.05, all seven projections) and the projector; lr 2e-5.
//            Starts from the stage-1 result (--stage_1_checkpoint_path, else the latest run).
// The vision tower never requires gradients, so no gradient memory is spent on it.

import { join } from "node:path";
import type { Batch } from "../data/collator.ts";
import type { SiqvlProcessor } from "../data/processor.ts";
import { openDatasets } from "../data/datasets/open.ts";
import { datasetLength } from "../data/datasets/split.ts";
import type { Dataset } from "../data/datasets/types.ts";
import { ImagePool } from "../data/image_pool.ts";
import { setMaxImagePixels } from "../data/image.ts";
import { setReadLimitMiB } from "../io/file.ts";
import { DataLoader, type LoaderState } from "../data/loader.ts";
import { openSiqvl } from "../models/factory.ts";
import { isLoraParam } from "../nn/lora.ts";
import type { SiqvlModel } from "../models/siqvl.ts";
import { cast } from "../tensor/ops/elementwise.ts";
import { noGrad, Tensor } from "../tensor/tensor.ts";
import type { TrainArgs } from "./args.ts";
import { findRuns, hasFinalModel, runBaseName } from "./checkpoint.ts";
import type { GenSample } from "./gen_eval.ts";
import type {
  BatchSource,
  Stage,
  StageContext,
  StageData,
  StageModel,
  StagePlan,
} from "./stage.ts";
import type { LossModel } from "./step.ts";

/** The plan for parsed flags. */
export function stagePlan(a: Pick<TrainArgs, "stage" | "use_lora">): StagePlan {
  return { stage: a.stage, llm: a.stage === 1 ? "frozen" : a.use_lora ? "lora" : "full" };
}

/** The plan in words. */
export function describePlan(p: StagePlan): string {
  return p.llm === "frozen"
    ? "vision + LLM frozen, projector trains"
    : p.llm === "lora"
    ? "vision frozen, projector + LoRA adapters train"
    : "vision frozen, projector + LLM train";
}

/**
 * The result of stage `prev` a run starts from: `explicit` (a final model directory or a run
 * directory holding `stage{prev}/`), else the latest matching run under --output_dir.
 */
export function findPreviousStage(
  a: TrainArgs,
  prev: number,
  explicit: string | null,
  flag: string,
  log: (s: string) => void,
): string {
  if (explicit) {
    if (hasFinalModel(explicit)) return explicit;
    if (hasFinalModel(join(explicit, `stage${prev}`))) return join(explicit, `stage${prev}`);
    throw new Error(
      `${flag} ${explicit}: no finished stage-${prev} model there (config.json + ` +
        "model.safetensors)",
    );
  }
  const v = a.vision_model_name_or_path, t = a.text_model_name_or_path;
  const runs = findRuns(a.output_dir, v, t, prev, hasFinalModel);
  if (!runs.length) {
    throw new Error(
      `stage ${a.stage} needs a stage-${prev} result: none found as ${
        runBaseName(v, t, prev)
      }_*/stage${prev} under ${a.output_dir}; run --stage ${prev} first or pass ${flag}`,
    );
  }
  log(`stage ${a.stage} starts from the latest stage-${prev} result: ${runs[0].stageDir}`);
  return runs[0].stageDir;
}

/** Storage dtype of frozen weights from the precision flags (--bf16 / --fp16 / --no_bf16). */
export function frozenStorageDtype(a: { bf16: boolean; fp16: boolean }): "bf16" | "f16" | "f32" {
  return a.bf16 ? "bf16" : a.fp16 ? "f16" : "f32";
}

/** Whether canonical parameter `name` trains under `plan` (the freeze rule, written once). */
export function trainsUnder(name: string, plan: StagePlan): boolean {
  if (name.startsWith("projector.")) return true;
  if (!name.startsWith("text_model.")) return false;
  const lora = isLoraParam(name);
  return plan.llm === "lora" ? lora : plan.llm === "full";
}

/**
 * Freeze everything, then unfreeze by {@link trainsUnder}. The vision tower stays frozen.
 * Returns the trainable parameters in a stable (state-dict) order.
 */
export function applyStagePlan(model: SiqvlModel, plan: StagePlan): [string, Tensor][] {
  if (plan.llm === "lora" && !model.text.loraLinears().length) {
    throw new Error("stage plan 'lora' but the model has no LoRA adapters");
  }
  for (const [name, p] of model.namedParameters()) p.setTrainable(trainsUnder(name, plan));
  if (model.vision.trainableParameters().length) {
    throw new Error("internal: the vision tower must stay frozen");
  }
  return model.trainableParameters().map(([n, p]) => [n, p.value]);
}

/**
 * Put every weight in the dtype it will live in: parameters that will train become f32 (master
 * weights); frozen matrices and embeddings take `frozen` (bf16/f16 packed, widened in the
 * kernels; 1-D weights always stay f32). Tensors too large for one storage binding are converted
 * on the CPU (one readback at load time). Call before {@link applyStagePlan}.
 */
export async function prepareStorage(
  model: SiqvlModel,
  plan: StagePlan,
  frozen: "bf16" | "f16" | "f32",
): Promise<{ converted: number; bytesBefore: number; bytesAfter: number }> {
  const gpu = model.gpu;
  const limit = gpu.limits.maxStorageBufferBindingSize;
  const bytesBefore = model.parameterBytes();
  let converted = 0;
  for (const [name, p] of model.namedParameters()) {
    if (!p.loaded) continue;
    const v = p.value;
    if (v.dtype === "i32") continue;
    const want = trainsUnder(name, plan) || p.role === "vector" ? "f32" : frozen;
    if (v.dtype === want) continue;
    const outBytes = Math.ceil(v.size * (want === "f32" ? 4 : 2) / 4) * 4;
    let t: Tensor;
    if (v.bytes <= limit && outBytes <= limit) {
      t = noGrad(() => cast(v, want));
    } else {
      t = Tensor.from(gpu, await v.readF32(), v.shape, want);
    }
    p.set(t);
    converted++;
  }
  return { converted, bytesBefore, bytesAfter: model.parameterBytes() };
}

/** The cross-entropy of a collated batch (pixels uploaded, the model's fused loss). */
export function supervisedLoss(model: SiqvlModel): LossModel<Batch> {
  return {
    lossOf(b: Batch) {
      const px = b.pixelShape[0]
        ? noGrad(() => Tensor.from(model.gpu, b.pixels, b.pixelShape, "f32"))
        : undefined;
      const out = model.forward({ ...b, pixelValues: px });
      if (!out.loss) throw new Error("model forward returned no loss (batch without labels?)");
      return { loss: out.loss, dispose: px ? [out.hidden, px] : [out.hidden] };
    },
  };
}

/** `n` fixed held-out samples for generation eval, from the start of `ds`. */
export async function fixedGenSamples(ds: Dataset, n: number): Promise<GenSample[]> {
  ds.rewind(0);
  const out: GenSample[] = [];
  for (let i = 0; i < n; i++) {
    const s = await ds.next();
    if (!s) break;
    out.push({ id: s.id, image: s.image, question: s.question, reference: s.answer });
  }
  ds.rewind(0);
  return out;
}

/**
 * The longest token row a micro-batch of `--per_device_train_batch_size` rows may have: the
 * model's max_position_embeddings, and what one storage binding holds (the attention queries and
 * the loss's hidden states are bound whole: B × T × max(hidden, heads × head_dim) × 4 bytes).
 * An explicit --max_length above it is refused here, with the numbers, before any data is read.
 */
export function rowLimit(
  a: Pick<TrainArgs, "per_device_train_batch_size" | "max_length">,
  model: Pick<SiqvlModel, "config"> & { gpu: { limits: { maxStorageBufferBindingSize: number } } },
): number {
  const t = model.config.text;
  const perToken = 4 * Math.max(t.hiddenSize, t.numAttentionHeads * t.headDim);
  const bind = model.gpu.limits.maxStorageBufferBindingSize;
  const B = a.per_device_train_batch_size;
  const byBinding = Math.floor(bind / perToken / B);
  const limit = Math.min(t.maxPositionEmbeddings, byBinding);
  if (a.max_length && a.max_length > limit) {
    const why = a.max_length > t.maxPositionEmbeddings
      ? `the model takes at most ${t.maxPositionEmbeddings} positions`
      : `${B} rows × ${a.max_length} tokens × ${perToken} bytes = ${B * a.max_length * perToken} ` +
        `bytes exceed one storage binding (${bind} bytes)`;
    throw new Error(
      `--max_length ${a.max_length} with --per_device_train_batch_size ${B}: ${why}; use ` +
        `--max_length <= ${limit} (or a smaller batch with gradient accumulation)`,
    );
  }
  return limit;
}

/** Counts by reason, added up. */
function sumCounts(...all: Record<string, number>[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const c of all) for (const [k, n] of Object.entries(c)) out[k] = (out[k] ?? 0) + n;
  return out;
}

/** The data loader as a {@link BatchSource} (its state is the loader's JSON position). */
export function loaderSource(loader: DataLoader): BatchSource<Batch> {
  return {
    next: () => loader.next(),
    state: () => loader.state(),
    restore: (s) => loader.restore(s as LoaderState),
    report: () => loader.report(),
    skipCounts: () => sumCounts(loader.dataset.skips.counts, loader.skips.counts),
    close: () => loader.close(),
  };
}

/** Open the stage's datasets (`--data_path`, splits) and their loaders for `processor`. */
export async function openSupervisedData(
  a: TrainArgs,
  bundle: { processor: SiqvlProcessor; model?: SiqvlModel },
): Promise<StageData<Batch>> {
  setReadLimitMiB(a.max_file_mb ?? undefined);
  setMaxImagePixels(a.max_image_pixels ?? undefined);
  const ds = await openDatasets({
    dataPath: a.data_path,
    subSets: a.sub_sets,
    subSetsWeights: a.sub_sets_weights,
    seed: a.seed,
    maxSamples: a.max_samples,
    maxEvalSamples: a.max_eval_samples,
    imageSize: bundle.processor.image.size,
    allowOutside: a.allow_outside_images,
  });
  return loaderData(a, bundle, ds);
}

/**
 * Loaders over opened train/eval datasets (workers, length limit, generation-eval samples):
 * the data of every stage that trains on (image, conversation) batches.
 */
export async function loaderData(
  a: TrainArgs,
  bundle: { processor: SiqvlProcessor; model?: SiqvlModel },
  ds: { train: Dataset; eval: Dataset | null; description: string },
): Promise<StageData<Batch>> {
  const { processor } = bundle;
  // Without --max_length, the model's own limit applies and longer samples are dropped and
  // counted (a sample the model cannot take never reaches it); --max_length N truncates.
  const modelLimit = bundle.model ? rowLimit(a, bundle.model) : undefined;
  const workers = a.dataloader_num_workers > 0 && !a.data_path.startsWith("shapes")
    ? Math.min(a.dataloader_num_workers, 4)
    : 0;
  const pool = new ImagePool({ workers });
  const common = {
    processor,
    batchSize: a.per_device_train_batch_size,
    maxLength: a.max_length ?? modelLimit,
    overLong: a.max_length ? "truncate" as const : "drop" as const,
    pool,
  };
  const train = new DataLoader({ ...common, dataset: ds.train });
  const evalDs = ds.eval;
  const genSamples = evalDs && a.gen_samples > 0
    ? await fixedGenSamples(evalDs, a.gen_samples)
    : [];
  const nTrain = datasetLength(ds.train);
  return {
    train: loaderSource(train),
    evalSource: evalDs
      ? () => {
        evalDs.rewind(0);
        return loaderSource(new DataLoader({ ...common, dataset: evalDs, epochs: 1 }));
      }
      : null,
    genSamples,
    numTrain: nTrain,
    numEval: evalDs ? a.max_eval_samples : 0,
    description: ds.description,
    close: async () => {
      await train.close();
      pool.close();
      await ds.train.close?.();
      await evalDs?.close?.();
    },
  };
}

/** Stages 1 and 2. */
export class SupervisedStage implements Stage<Batch> {
  readonly id: number;
  readonly plan: StagePlan;
  constructor(readonly args: TrainArgs) {
    this.id = args.stage;
    this.plan = stagePlan(args);
  }

  describe(): string {
    return describePlan(this.plan);
  }

  async openModel(ctx: StageContext): Promise<StageModel> {
    const a = this.args;
    let from: string | null = null;
    const bundle = a.stage === 1
      ? await openSiqvl(ctx.gpu, {
        vision: a.vision_model_name_or_path,
        text: a.text_model_name_or_path,
        projector: { factor: a.pixel_shuffle_factor },
        seed: a.seed,
      }, { log: ctx.log })
      : await openSiqvl(ctx.gpu, {
        checkpoint: from = ctx.resumed?.from_dir && hasFinalModel(ctx.resumed.from_dir)
          ? ctx.resumed.from_dir
          : findPreviousStage(
            a,
            1,
            a.stage_1_checkpoint_path,
            "--stage_1_checkpoint_path",
            ctx.log,
          ),
      });
    const { model } = bundle;
    try {
      if (from) {
        if (model.projector.factor !== a.pixel_shuffle_factor) {
          throw new Error(
            `--pixel_shuffle_factor ${a.pixel_shuffle_factor} differs from the stage-1 model's ` +
              `factor ${model.projector.factor} (${from})`,
          );
        }
        if (model.text.loraLinears().length) {
          throw new Error(`${from}: the stage-1 model already carries LoRA adapters`);
        }
      }
      if (this.plan.llm === "lora") {
        model.text.attachLora(
          { r: a.lora_r, alpha: a.lora_alpha, dropout: a.lora_dropout },
          a.lora_target_modules,
        );
        model.text.initialize(ctx.gpu, a.seed);
      }
      const conv = await prepareStorage(model, this.plan, frozenStorageDtype(a));
      if (conv.converted) {
        ctx.log(
          `[siqvl] converted ${conv.converted} weight tensors to their storage dtypes ` +
            `(${(conv.bytesBefore / 2 ** 20).toFixed(1)} → ${
              (conv.bytesAfter / 2 ** 20).toFixed(1)
            } MiB)`,
        );
      }
    } catch (e) {
      bundle.dispose();
      throw e;
    }
    return { bundle, from };
  }

  trainable(model: SiqvlModel): [string, Tensor][] {
    return applyStagePlan(model, this.plan);
  }

  openData(_ctx: StageContext, bundle: { processor: SiqvlProcessor }): Promise<StageData<Batch>> {
    return openSupervisedData(this.args, bundle);
  }

  lossModel(model: SiqvlModel): LossModel<Batch> {
    return supervisedLoss(model);
  }
}
