// Stage 4, preference optimisation (--po_loss sigmoid | ipo | hinge | simpo | orpo).
//
//   Starts from a stage-3 (else stage-2) result; vision frozen; projector + LLM train (LoRA or
//   full). Data: preference pairs (shapes_preference, or records with chosen / rejected columns).
//   A micro-batch of B pairs is 2B rows [chosen…, rejected…] sharing B images (the vision tower
//   runs once per pair); labels cover each completion and its <|im_end|>.
//   Policy log-probs: sequenceLogProbs over the label tokens (never the full logits).
//   The reference (losses other than simpo / orpo):
//     LoRA                        the same weights with the adapters switched off (no copy);
//     full fine-tuning            a frozen copy of the starting model, or, with
//                                 --precompute_ref_log_probs, one pass over the training pairs
//                                 before training, kept in the data source's state (so the
//                                 checkpoints carry it and a resume does not recompute it).
//   Loss and TRL's metrics: po_objective.ts (rewards/*, logps/*, every logging step).

import type { SiqvlProcessor } from "../data/processor.ts";
import type { Dataset, JsonValue } from "../data/datasets/types.ts";
import { datasetLength } from "../data/datasets/split.ts";
import type { PreferenceSample } from "../data/datasets/records.ts";
import { SkipCounter } from "../data/datasets/types.ts";
import { ImagePool } from "../data/image_pool.ts";
import { openSiqvl, type SiqvlBundle } from "../models/factory.ts";
import type { SiqvlModel } from "../models/siqvl.ts";
import { noGrad, Tensor } from "../tensor/tensor.ts";
import type { TrainArgs } from "./args.ts";
import { continuedModel, continuedPlan, StageDatasets } from "./cot_sft.ts";
import {
  encodeCompletion,
  labelLogProbs,
  type SharedImageBatch,
  sharedImageBatch,
} from "./pairs.ts";
import { PREFERENCE_STATS, preferenceObjective } from "./po_objective.ts";
import { isReferenceFree, type PoLossConfig, type PoLossType } from "./po_loss.ts";
import type {
  BatchSource,
  Stage,
  StageContext,
  StageData,
  StageModel,
  StagePlan,
} from "./stage.ts";
import type { LossModel } from "./step.ts";
import { applyStagePlan, describePlan, frozenStorageDtype, prepareStorage } from "./supervised.ts";

/** B preference pairs: rows 0..B−1 chosen, B..2B−1 rejected. */
export interface PreferenceBatch extends SharedImageBatch {
  pairs: number;
  ids: string[];
  /** Precomputed reference sums [2B], or null. */
  ref: Float32Array | null;
}

/** Unusable records in a row after which a source gives up (its skip report says why). */
export const MAX_UNUSABLE_IN_A_ROW = 1000;

/** Position of a {@link PairSource}. */
interface PairState {
  epoch: number;
  dataset: JsonValue;
  skips: JsonValue;
  /** Precomputed reference log-probs by pair id: [chosen, rejected]. */
  ref: JsonValue;
}

/** Pairs of a dataset as batches (see the file header); exact resume by dataset position. */
export class PairSource implements BatchSource<PreferenceBatch> {
  readonly skips: SkipCounter = new SkipCounter();
  #epoch = 0;
  /** Reference log-probs by pair id (precomputed), or null. */
  ref: Map<string, [number, number]> | null = null;
  readonly #pool = new ImagePool({ workers: 0 });

  constructor(
    readonly dataset: Dataset,
    readonly processor: SiqvlProcessor,
    readonly pairsPerBatch: number,
    readonly maxLength: number | undefined,
    readonly epochs = Infinity,
  ) {}

  async next(): Promise<PreferenceBatch | undefined> {
    const rows: { inputIds: Int32Array; labels: Int32Array }[] = [];
    const rej: typeof rows = [];
    const images: Float32Array[] = [];
    const ids: string[] = [];
    let emptyPass = true, unusable = 0;
    while (ids.length < this.pairsPerBatch) {
      const s = await this.dataset.next() as PreferenceSample | undefined;
      if (!s) {
        if (this.#epoch + 1 >= this.epochs) break;
        if (emptyPass && this.#epoch > 0 && !ids.length) {
          throw new Error(`${this.dataset.name}: a whole pass gave no usable preference pair`);
        }
        this.dataset.rewind(++this.#epoch);
        emptyPass = true;
        continue;
      }
      if (typeof s.chosen !== "string" || typeof s.rejected !== "string") {
        throw new Error(`${this.dataset.name}: sample ${s.id} is not a preference pair`);
      }
      const c = encodeCompletion(this.processor, s.question, s.history, s.chosen, this.maxLength);
      const r = encodeCompletion(this.processor, s.question, s.history, s.rejected, this.maxLength);
      if (typeof c === "string" || typeof r === "string") {
        this.skips.add(typeof c === "string" ? c : r as string, s.id);
        if (++unusable > MAX_UNUSABLE_IN_A_ROW) {
          throw new Error(
            `${this.dataset.name}: ${unusable} pairs in a row are unusable:\n${this.report()}`,
          );
        }
        continue;
      }
      unusable = 0;
      emptyPass = false;
      images.push(await this.#pool.process(s.image, this.processor.image));
      rows.push(c);
      rej.push(r);
      ids.push(s.id);
    }
    if (!ids.length) return undefined;
    const B = ids.length;
    const b = sharedImageBatch(
      [...rows, ...rej],
      images,
      [...ids.keys(), ...ids.keys()],
      this.processor,
    );
    let ref: Float32Array | null = null;
    if (this.ref) {
      ref = new Float32Array(2 * B);
      ids.forEach((id, i) => {
        const v = this.ref!.get(id);
        if (!v) throw new Error(`precomputed reference log-probs have no entry for pair ${id}`);
        [ref![i], ref![B + i]] = v;
      });
    }
    // the window weighs micro-batches by pairs (the loss is a mean over pairs)
    return { ...b, numLossTokens: B, pairs: B, ids, ref };
  }

  state(): JsonValue {
    const st: PairState = {
      epoch: this.#epoch,
      dataset: this.dataset.state(),
      skips: this.skips.toJSON(),
      ref: this.ref ? Object.fromEntries(this.ref) : null,
    };
    return st as unknown as JsonValue;
  }

  restore(state: JsonValue): Promise<void> {
    const st = state as unknown as PairState;
    this.#epoch = st.epoch;
    this.dataset.restore(st.dataset as Record<string, JsonValue>);
    this.skips.load(st.skips);
    if (st.ref) {
      this.ref = new Map(Object.entries(st.ref as Record<string, [number, number]>));
    }
    return Promise.resolve();
  }

  report(): string {
    return [this.dataset.skips.report(), this.skips.report()].filter((x) => x).join("\n");
  }

  async close(): Promise<void> {
    this.#pool.close();
    await this.dataset.close?.();
  }
}

/** The policy's summed label log-probs of a batch's rows: [R]. */
export function rowLogProbs(model: SiqvlModel, b: SharedImageBatch): Tensor {
  return labelLogProbs(model, b, "row");
}

/** The reference's log-probs of a batch's rows (no tape): adapters off, a frozen copy, or none. */
export type ReferenceFn = (b: SharedImageBatch) => Tensor;

/** The reference of a LoRA policy: the same model with its adapters switched off. */
export function adaptersOffReference(model: SiqvlModel): ReferenceFn {
  return (b) =>
    noGrad(() => {
      model.text.setLoraEnabled(false);
      try {
        return rowLogProbs(model, b);
      } finally {
        model.text.setLoraEnabled(true);
      }
    });
}

/** The preference loss config from flags. */
export function poConfig(a: TrainArgs): PoLossConfig {
  return {
    type: a.po_loss as PoLossType,
    beta: a.beta,
    labelSmoothing: a.label_smoothing,
    simpoGamma: a.simpo_gamma,
  };
}

/** Stage 4 with a preference loss. */
export class PreferenceStage implements Stage<PreferenceBatch> {
  readonly id = 4;
  readonly plan: StagePlan;
  readonly cfg: PoLossConfig;
  readonly #data: StageDatasets;
  /** The frozen copy (full fine-tuning without precomputed reference log-probs). */
  #refBundle: SiqvlBundle | null = null;

  constructor(readonly args: TrainArgs) {
    this.plan = continuedPlan(args);
    this.cfg = poConfig(args);
    this.#data = new StageDatasets(args, "preference");
  }

  /** How the reference is obtained. */
  get reference(): "none" | "adapters-off" | "precomputed" | "frozen copy" {
    if (isReferenceFree(this.cfg.type)) return "none";
    if (this.args.precompute_ref_log_probs) return "precomputed";
    return this.plan.llm === "lora" ? "adapters-off" : "frozen copy";
  }

  describe(): string {
    return `${describePlan(this.plan)}; preference loss ${this.cfg.type} (β ${this.cfg.beta}); ` +
      `reference: ${this.reference}`;
  }

  async openModel(ctx: StageContext): Promise<StageModel> {
    await this.#data.check();
    const m = await continuedModel(ctx, this.plan);
    if (this.reference === "frozen copy") {
      const ref = await openSiqvl(ctx.gpu, { checkpoint: m.from! });
      ref.model.text.mergeLora();
      await prepareStorage(ref.model, { stage: 4, llm: "frozen" }, frozenStorageDtype(this.args));
      ref.model.setTrainable(false);
      ref.model.eval();
      this.#refBundle = ref;
      ctx.log(`[siqvl] reference: a frozen copy of ${m.from}`);
    }
    return m;
  }

  trainable(model: SiqvlModel): [string, Tensor][] {
    return applyStagePlan(model, this.plan);
  }

  /** The reference function for this run (null: reference-free or precomputed). */
  referenceFn(model: SiqvlModel): ReferenceFn | null {
    switch (this.reference) {
      case "adapters-off":
        return adaptersOffReference(model);
      case "frozen copy": {
        const ref = this.#refBundle!.model;
        return (b) => noGrad(() => rowLogProbs(ref, b));
      }
      default:
        return null;
    }
  }

  async openData(ctx: StageContext, bundle: SiqvlBundle): Promise<StageData<PreferenceBatch>> {
    const a = this.args;
    const ds = await this.#data.open(bundle.processor.image.size);
    const pairs = a.per_device_train_batch_size;
    const train = new PairSource(ds.train, bundle.processor, pairs, a.max_length ?? undefined);
    if (this.reference === "precomputed" && !ctx.resumed) {
      const n = datasetLength(ds.train);
      if (!isFinite(n)) {
        throw new Error(
          `--precompute_ref_log_probs needs a finite training set: give --max_samples ` +
            `(${ds.description} is unbounded)`,
        );
      }
      train.ref = await precomputeReference(
        bundle.model,
        ds.train,
        bundle.processor,
        pairs,
        a,
        ctx,
      );
      ds.train.rewind(0);
    }
    const evalDs = ds.eval;
    return {
      train,
      evalSource: evalDs
        ? () => {
          evalDs.rewind(0);
          const src = new PairSource(evalDs, bundle.processor, pairs, a.max_length ?? undefined, 1);
          return src;
        }
        : null,
      genSamples: [],
      numTrain: datasetLength(ds.train),
      numEval: evalDs ? a.max_eval_samples : 0,
      description: ds.description,
      close: async () => {
        await train.close();
        await evalDs?.close?.();
        this.#refBundle?.dispose();
      },
    };
  }

  lossModel(model: SiqvlModel): LossModel<PreferenceBatch> {
    const refFn = this.referenceFn(model);
    const cfg = this.cfg;
    const names = cfg.type === "orpo" ? PREFERENCE_STATS : PREFERENCE_STATS.slice(0, 6);
    return {
      statNames: names,
      lossOf(b: PreferenceBatch) {
        const lp = rowLogProbs(model, b);
        const ref = isReferenceFree(cfg.type)
          ? null
          : b.ref
          ? Tensor.from(model.gpu, b.ref, [b.batch])
          : refFn!(b);
        const { loss, stats } = preferenceObjective(lp, ref, b.rowTokens, cfg);
        const used = stats.slice(0, names.length);
        return {
          loss,
          stats: used,
          dispose: [lp, ...(ref ? [ref] : []), ...stats.slice(names.length)],
        };
      },
    };
  }
}

/** One reference pass over a training pass (the model before any update; adapters off). */
async function precomputeReference(
  model: SiqvlModel,
  ds: Dataset,
  processor: SiqvlProcessor,
  pairs: number,
  a: TrainArgs,
  ctx: StageContext,
): Promise<Map<string, [number, number]>> {
  const t0 = performance.now();
  ds.rewind(0);
  const src = new PairSource(ds, processor, pairs, a.max_length ?? undefined, 1);
  const out = new Map<string, [number, number]>();
  const lora = model.text.loraLinears().length > 0;
  const wasTraining = model.training;
  model.eval();
  if (lora) model.text.setLoraEnabled(false);
  try {
    for (let b = await src.next(); b; b = await src.next()) {
      const lp = noGrad(() => rowLogProbs(model, b!));
      const v = await lp.read();
      lp.dispose();
      b.ids.forEach((id, i) => out.set(id, [v[i], v[b!.pairs + i]]));
    }
  } finally {
    if (lora) model.text.setLoraEnabled(true);
    model.train(wasTraining);
  }
  ctx.log(
    `[siqvl] precomputed reference log-probs of ${out.size} pairs in ` +
      `${((performance.now() - t0) / 1000).toFixed(1)} s (kept in the checkpoints)`,
  );
  return out;
}
