// Stage 4, RL with verifiable rewards (--rl grpo).
//
//   Each step's data is made by the policy itself: per prompt --num_generations completions are
//   sampled with the KV-cache generator (--temperature, --top_p, --max_completion_length; the
//   sampling seed is a function of --seed and the rollout number, so a resumed run samples the
//   same completions), scored by the reward functions (rewards.ts), and turned into
//   group-normalised advantages (grpo.ts). The loss is the clipped policy-gradient objective,
//   plus β · KL to the reference when --beta > 0 (adapters off with LoRA, else a frozen copy).
//   Rows of a group share their prompt's image (the vision tower runs once per prompt).
//   Logged per step: reward, rewards/<name>/mean, reward_std, frac_reward_zero_std,
//   completions/mean_length, kl (β > 0), clip_ratio.

import type { ReasoningSample } from "../data/datasets/cot_shapes.ts";
import type { Dataset, JsonValue } from "../data/datasets/types.ts";
import { SkipCounter } from "../data/datasets/types.ts";
import { datasetLength } from "../data/datasets/split.ts";
import { ImagePool } from "../data/image_pool.ts";
import type { SiqvlProcessor } from "../data/processor.ts";
import { IGNORE_INDEX } from "../data/processor.ts";
import { extractAnswer, type ReasoningFormat } from "../data/reasoning.ts";
import { hash32 } from "../data/rng.ts";
import { shiftLabels } from "../data/collator.ts";
import { generate } from "../infer/generate.ts";
import { openSiqvl, type SiqvlBundle } from "../models/factory.ts";
import type { SiqvlModel } from "../models/siqvl.ts";
import { noGrad, Tensor } from "../tensor/tensor.ts";
import type { TrainArgs } from "./args.ts";
import { continuedModel, continuedPlan, StageDatasets } from "./cot_sft.ts";
import { groupAdvantages, type GrpoConfig, type GrpoLossType, type RewardScaling } from "./grpo.ts";
import { labelLogProbs, type SharedImageBatch, sharedImageBatch } from "./pairs.ts";
import { grpoObjective } from "./po_objective.ts";
import { loadRewardFunctions, type NamedReward, scoreCompletions } from "./rewards.ts";
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

/** GRPO settings from flags. */
export function grpoConfig(a: TrainArgs): GrpoConfig {
  return {
    numGenerations: a.num_generations,
    epsilon: a.epsilon,
    epsilonHigh: a.epsilon,
    beta: a.beta,
    scaleRewards: a.scale_rewards as RewardScaling,
    lossType: a.grpo_loss_type as GrpoLossType,
    maxCompletionLength: a.max_completion_length,
    temperature: a.temperature,
    topP: a.top_p,
  };
}

/** One rollout batch: G completions of each of P prompts, with per-token inputs. */
export interface GrpoBatch extends SharedImageBatch {
  /** Advantage and aggregation weight of every label token (row-major order). */
  tokenAdvantage: Float32Array;
  tokenWeight: Float32Array;
  /** CPU statistics in the order of the stage's rollout stat names. */
  rollout: number[];
  /** Decoded completions and their total rewards (for tests and the demo). */
  completions: string[];
  rewards: number[];
}

/** Sampled completions of prompts, scored: what a rollout (and the demo's evaluation) needs. */
export interface Rollout {
  /** Prompt ids per row (rows = prompts × G, prompt-major). */
  promptIds: number[][];
  tokens: number[][];
  texts: string[];
  /** scores[k][row] of reward k; total[row] = Σ_k w_k · scores[k][row]. */
  scores: number[][];
  total: number[];
}

/** The reference answer of a sample: its finalAnswer, else the answer read by the format. */
export function referenceAnswer(s: ReasoningSample, format: ReasoningFormat): string {
  return s.finalAnswer ?? extractAnswer(s.answer, format);
}

/** Sample G completions per prompt and score them (the model is put in eval mode meanwhile). */
export async function rollout(
  model: SiqvlModel,
  processor: SiqvlProcessor,
  samples: ReasoningSample[],
  images: Float32Array[],
  cfg: Pick<GrpoConfig, "numGenerations" | "temperature" | "topP" | "maxCompletionLength">,
  rewards: NamedReward[],
  weights: number[] | null,
  format: ReasoningFormat,
  seed: number,
): Promise<Rollout> {
  const G = cfg.numGenerations;
  const promptIds: number[][] = [];
  const S = processor.image.size, plane = 3 * S * S;
  const flat = new Float32Array(samples.length * G * plane);
  samples.forEach((s, p) => {
    const ids = Array.from(processor.encodePrompt(s.question, s.history ?? []).inputIds);
    for (let g = 0; g < G; g++) {
      promptIds.push(ids);
      flat.set(images[p], (p * G + g) * plane);
    }
  });
  const wasTraining = model.training;
  model.eval();
  const px = noGrad(() => Tensor.from(model.gpu, flat, [samples.length * G, 3, S, S], "f32"));
  let tokens: number[][];
  try {
    const res = await generate(model, { inputIds: promptIds, pixelValues: px }, {
      maxNewTokens: cfg.maxCompletionLength,
      doSample: cfg.temperature > 0,
      temperature: cfg.temperature > 0 ? cfg.temperature : undefined,
      topP: cfg.topP,
      stopTokenIds: processor.stopIds(),
      padTokenId: processor.ids.pad,
      seed,
    });
    // A completion cannot carry image placeholders (they would need image features): cut a
    // sampled one at its first vision token.
    const ids = processor.ids;
    const vision = new Set([ids.imagePad, ids.visionStart, ids.visionEnd]);
    tokens = res.tokens.map((t) => {
      const k = t.findIndex((x) => vision.has(x));
      return k < 0 ? t : t.slice(0, Math.max(1, k)).map((x) => (vision.has(x) ? ids.pad : x));
    });
  } finally {
    px.dispose();
    model.train(wasTraining);
  }
  const texts = tokens.map((t) => processor.tokenizer.decode(t, { skipSpecialTokens: true }));
  const rows = samples.flatMap((s) => Array.from({ length: G }, () => s));
  const scores = await scoreCompletions(rewards, texts, {
    answers: rows.map((s) => referenceAnswer(s, format)),
    questions: rows.map((s) => s.question),
    format,
  });
  const total = texts.map((_, i) =>
    scores.reduce((t, sc, k) => t + (weights?.[k] ?? 1) * sc[i], 0)
  );
  return { promptIds, tokens, texts, scores, total };
}

/** Rollouts as batches (see the file header). */
export class RolloutSource implements BatchSource<GrpoBatch> {
  readonly skips: SkipCounter = new SkipCounter();
  #epoch = 0;
  #round = 0;
  readonly #pool = new ImagePool({ workers: 0 });

  constructor(
    readonly dataset: Dataset,
    readonly model: SiqvlModel,
    readonly processor: SiqvlProcessor,
    readonly args: TrainArgs,
    readonly rewards: NamedReward[],
  ) {}

  /** Names of the rollout statistics, in GrpoBatch.rollout order. */
  get statNames(): string[] {
    return [
      "reward",
      ...this.rewards.map((r) => `rewards/${r.name}/mean`),
      "reward_std",
      "frac_reward_zero_std",
      "completions/mean_length",
    ];
  }

  async next(): Promise<GrpoBatch | undefined> {
    const a = this.args, cfg = grpoConfig(a), G = cfg.numGenerations;
    const P = a.per_device_train_batch_size / G;
    const samples: ReasoningSample[] = [];
    const images: Float32Array[] = [];
    let rewinds = 0;
    while (samples.length < P) {
      const s = await this.dataset.next() as ReasoningSample | undefined;
      if (!s) {
        if (++rewinds > 1 && !samples.length) {
          throw new Error(`${this.dataset.name}: a whole pass gave no usable prompt`);
        }
        this.dataset.rewind(++this.#epoch);
        continue;
      }
      if (!referenceAnswer(s, a.reasoning_format as ReasoningFormat).trim()) {
        this.skips.add("no reference answer", s.id);
        continue;
      }
      samples.push(s);
      images.push(await this.#pool.process(s.image, this.processor.image));
    }
    const round = this.#round++;
    const r = await rollout(
      this.model,
      this.processor,
      samples,
      images,
      cfg,
      this.rewards,
      a.reward_weights,
      a.reasoning_format as ReasoningFormat,
      hash32(a.seed, "grpo rollout", round),
    );
    const adv = groupAdvantages(r.total, G, cfg.scaleRewards);
    const rows = r.promptIds.map((p, i) => {
      const t = r.tokens[i];
      const ids = Int32Array.from([...p, ...t]);
      const labels = new Int32Array(ids.length).fill(IGNORE_INDEX);
      labels.set(t, p.length);
      return { inputIds: ids, labels };
    });
    const b = sharedImageBatch(rows, images, rows.map((_, i) => Math.floor(i / G)), this.processor);
    // per label token, in row-major order (the order sequenceLogProbs returns them)
    const { targets } = shiftLabels(b.labels, b.batch, b.seqLen);
    const tokAdv: number[] = [], tokW: number[] = [];
    const n = b.numLossTokens, R = b.batch;
    for (let i = 0; i < targets.length; i++) {
      if (targets[i] === IGNORE_INDEX) continue;
      const row = Math.floor(i / b.seqLen);
      tokAdv.push(adv.advantages[row]);
      tokW.push(
        cfg.lossType === "dapo"
          ? 1 / n
          : cfg.lossType === "grpo"
          ? 1 / (b.rowTokens[row] * R)
          : 1 / (R * cfg.maxCompletionLength),
      );
    }
    const mean = (x: number[]) => x.reduce((s, v) => s + v, 0) / x.length;
    return {
      ...b,
      // dapo weighs micro-batches of a window by tokens; grpo / dr_grpo by completions
      numLossTokens: cfg.lossType === "dapo" ? n : R,
      tokenAdvantage: Float32Array.from(tokAdv),
      tokenWeight: Float32Array.from(tokW),
      rollout: [
        mean(r.total),
        ...r.scores.map(mean),
        adv.rewardStd,
        adv.fracZeroStd,
        mean(r.tokens.map((t) => t.length)),
      ],
      completions: r.texts,
      rewards: r.total,
    };
  }

  state(): JsonValue {
    return {
      epoch: this.#epoch,
      round: this.#round,
      dataset: this.dataset.state(),
      skips: this.skips.toJSON(),
    };
  }

  restore(state: JsonValue): Promise<void> {
    const st = state as { epoch: number; round: number; dataset: JsonValue; skips: JsonValue };
    this.#epoch = st.epoch;
    this.#round = st.round;
    this.dataset.restore(st.dataset as Record<string, JsonValue>);
    this.skips.load(st.skips);
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

/** Per-token log-probs of a batch's label tokens (row-major), [N]. */
export function tokenLogProbs(model: SiqvlModel, b: SharedImageBatch): Tensor {
  return labelLogProbs(model, b, "token");
}

/** Stage 4 with GRPO. */
export class GrpoStage implements Stage<GrpoBatch> {
  readonly id = 4;
  readonly plan: StagePlan;
  readonly cfg: GrpoConfig;
  readonly #data: StageDatasets;
  #rewards: NamedReward[] = [];
  #refBundle: SiqvlBundle | null = null;
  #rolloutNames: string[] = [];

  constructor(readonly args: TrainArgs) {
    this.plan = continuedPlan(args);
    this.cfg = grpoConfig(args);
    this.#data = new StageDatasets(args, "reasoning");
  }

  describe(): string {
    const c = this.cfg;
    return `${describePlan(this.plan)}; GRPO (${c.numGenerations} completions per prompt, ` +
      `rewards ${this.args.reward_funcs.join(", ")}, ε ${c.epsilon}, β ${c.beta}` +
      `${
        c.beta > 0
          ? `, reference: ${this.plan.llm === "lora" ? "adapters off" : "frozen copy"}`
          : ""
      })`;
  }

  async openModel(ctx: StageContext): Promise<StageModel> {
    this.#rewards = await loadRewardFunctions(this.args.reward_funcs);
    await this.#data.check();
    const m = await continuedModel(ctx, this.plan);
    if (this.cfg.beta > 0 && this.plan.llm === "full") {
      const ref = await openSiqvl(ctx.gpu, { checkpoint: m.from! });
      ref.model.text.mergeLora();
      await prepareStorage(ref.model, { stage: 4, llm: "frozen" }, frozenStorageDtype(this.args));
      ref.model.setTrainable(false);
      ref.model.eval();
      this.#refBundle = ref;
    }
    return m;
  }

  trainable(model: SiqvlModel): [string, Tensor][] {
    return applyStagePlan(model, this.plan);
  }

  async openData(_ctx: StageContext, bundle: SiqvlBundle): Promise<StageData<GrpoBatch>> {
    const ds = await this.#data.open(bundle.processor.image.size);
    const train = new RolloutSource(
      ds.train,
      bundle.model,
      bundle.processor,
      this.args,
      this.#rewards,
    );
    this.#rolloutNames = train.statNames;
    return {
      train,
      evalSource: null,
      genSamples: [],
      numTrain: datasetLength(ds.train),
      numEval: 0,
      description: ds.description,
      close: async () => {
        await train.close();
        await ds.eval?.close?.();
        this.#refBundle?.dispose();
      },
    };
  }

  lossModel(model: SiqvlModel): LossModel<GrpoBatch> {
    const cfg = this.cfg;
    const kl = cfg.beta > 0;
    const refModel = this.#refBundle?.model ?? null;
    const reference = (b: GrpoBatch): Tensor | null => {
      if (!kl) return null;
      if (refModel) return noGrad(() => tokenLogProbs(refModel, b));
      return noGrad(() => {
        model.text.setLoraEnabled(false);
        try {
          return tokenLogProbs(model, b);
        } finally {
          model.text.setLoraEnabled(true);
        }
      });
    };
    const rolloutNames = this.#rolloutNames.length
      ? this.#rolloutNames
      : ["reward", ...this.args.reward_funcs.map((r) => `rewards/${r}/mean`)];
    return {
      statNames: [...(kl ? ["kl"] : []), "clip_ratio", ...rolloutNames],
      lossOf(b: GrpoBatch) {
        const lp = tokenLogProbs(model, b);
        const ref = reference(b);
        const { loss, stats } = grpoObjective(lp, ref, b.tokenAdvantage, b.tokenWeight, cfg);
        const cpu = b.rollout.map((v) => Tensor.from(model.gpu, [v], []));
        return {
          loss,
          stats: [...(kl ? [stats[0]] : []), stats[1], ...cpu],
          dispose: [lp, ...(ref ? [ref] : []), ...(kl ? [] : [stats[0]])],
        };
      },
    };
  }
}
