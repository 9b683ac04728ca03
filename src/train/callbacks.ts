// Trainer callbacks: work the loop runs between optimizer steps, each with its own state.
//
//   EvalLossCallback   mean loss over the held-out data every eval_steps and at the end; tracks
//                      the best value (its checkpoint is protected from rotation) and stops the
//                      run after 10 evaluations without improvement
//   GenEvalCallback    answers fixed held-out questions every gen_steps, at step 0 and at the end
//
// A callback sees the run through a TrainerView; the time it takes is not counted as training
// throughput. More (benchmark tasks, sample logging) plug in the same way: `callbacks` option of
// runTraining.

import type { JsonValue } from "../data/datasets/types.ts";
import type { SiqvlProcessor } from "../data/processor.ts";
import { ImagePool } from "../data/image_pool.ts";
import type { SiqvlModel } from "../models/siqvl.ts";
import { addInPlace, zeros } from "../tensor/ops/elementwise.ts";
import { keep, noGrad, tidy } from "../tensor/tensor.ts";
import type { TrainArgs } from "./args.ts";
import type { ExportInfo } from "./export.ts";
import { generationEval, type GenRow, type GenSample } from "./gen_eval.ts";
import type { MetricsLog } from "./metrics.ts";
import type { BatchSource } from "./stage.ts";
import type { LossModel, StepBatch } from "./step.ts";

/** What a callback sees of the run. */
export interface TrainerView {
  args: TrainArgs;
  model: SiqvlModel;
  processor: SiqvlProcessor;
  metrics: MetricsLog;
  totalSteps: number;
  /** Print a line without breaking the progress bar. */
  say(msg: string): void;
}

/** Hooks the trainer calls; all optional. */
export interface TrainerCallback {
  /** Key of its state in trainer_state.json. */
  readonly name: string;
  /** Before the first step of a fresh (not resumed) run. */
  onStart?(t: TrainerView): Promise<void>;
  /** After optimizer step `step`, except the last one (see onEnd). */
  onStep?(t: TrainerView, step: number): Promise<void>;
  /** After the last step, before the final export. */
  onEnd?(t: TrainerView, step: number): Promise<void>;
  /** A checkpoint of `step` was saved at `path`. */
  onSave?(step: number, path: string): void;
  /** Whether the run should stop now (early stopping). */
  shouldStop?(): string | null;
  /** A checkpoint rotation must keep (the best one). */
  protectedCheckpoint?(): string | null;
  /** State saved with checkpoints, restored on resume. */
  state?(): JsonValue;
  restore?(state: JsonValue): void;
  /** Results for the model card. */
  exportInfo?(): Partial<ExportInfo>;
}

function fmtNum(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  return Math.abs(x) >= 100 ? x.toFixed(1) : x.toPrecision(4);
}

/** Held-out loss, best-checkpoint tracking and early stopping. */
export class EvalLossCallback<B extends StepBatch> implements TrainerCallback {
  readonly name = "eval_loss";
  #best = Infinity;
  #bestStep = -1;
  #bestCheckpoint: string | null = null;
  #withoutGain = 0;
  #last: number | undefined;
  #stop: string | null = null;

  constructor(
    readonly source: () => BatchSource<B>,
    readonly loss: LossModel<B>,
    readonly patience = 10,
  ) {}

  /** Mean loss over the held-out data, logged as an "eval" record. */
  async evaluate(t: TrainerView, step: number): Promise<number> {
    const t0 = performance.now();
    const src = this.source();
    const { model } = t;
    model.eval();
    const acc = keep(noGrad(() => zeros(model.gpu, [])));
    let n = 0, rows = 0;
    try {
      for (let b = await src.next(); b; b = await src.next()) {
        const batch = b;
        if (!batch.numLossTokens) continue;
        noGrad(() =>
          tidy(() => {
            const out = this.loss.lossOf(batch);
            addInPlace(acc, out.loss, batch.numLossTokens);
            for (const x of out.dispose ?? []) x.dispose();
          })
        );
        n += batch.numLossTokens;
        rows += batch.batch;
      }
      const loss = n ? (await acc.item()) / n : NaN;
      if (!Number.isFinite(loss)) {
        throw new Error(
          `eval loss at step ${step} is ${loss} over ${rows} samples (${n} answer tokens): ` +
            (n === 0
              ? "the held-out data has no answer tokens"
              : "the weights or the held-out data produce NaN/Inf") +
            "; the model is not exported with it",
        );
      }
      t.metrics.log({
        type: "eval",
        step,
        loss,
        perplexity: Math.min(Math.exp(loss), 10000),
        samples: rows,
        tokens: n,
        seconds: (performance.now() - t0) / 1000,
      });
      t.say(`[siqvl] eval at step ${step}: loss ${fmtNum(loss)} over ${rows} samples`);
      this.#last = loss;
      return loss;
    } finally {
      acc.dispose();
      await src.close();
      model.train(true);
    }
  }

  async onStep(t: TrainerView, step: number): Promise<void> {
    if (step % t.args.eval_steps !== 0) return;
    const l = await this.evaluate(t, step);
    if (l < this.#best - 1e-4) {
      this.#best = l;
      this.#bestStep = step;
      this.#withoutGain = 0;
    } else if (++this.#withoutGain >= this.patience) {
      this.#stop = `eval loss has not improved for ${this.patience} evaluations`;
      t.say(`[siqvl] early stopping: ${this.#stop}`);
    }
  }

  async onEnd(t: TrainerView, step: number): Promise<void> {
    await this.evaluate(t, step);
  }

  onSave(step: number, path: string): void {
    if (step === this.#bestStep) this.#bestCheckpoint = path;
  }

  shouldStop(): string | null {
    return this.#stop;
  }

  protectedCheckpoint(): string | null {
    return this.#bestCheckpoint;
  }

  state(): JsonValue {
    return {
      best_metric: Number.isFinite(this.#best) ? this.#best : null,
      best_step: this.#bestStep,
      best_model_checkpoint: this.#bestCheckpoint,
      evals_without_gain: this.#withoutGain,
    };
  }

  restore(s: JsonValue): void {
    const o = s as Record<string, JsonValue>;
    this.#best = typeof o.best_metric === "number" ? o.best_metric : Infinity;
    this.#bestStep = typeof o.best_step === "number" ? o.best_step : -1;
    this.#bestCheckpoint = typeof o.best_model_checkpoint === "string"
      ? o.best_model_checkpoint
      : null;
    this.#withoutGain = typeof o.evals_without_gain === "number" ? o.evals_without_gain : 0;
  }

  /** The best eval loss and its checkpoint (for trainer_state.json). */
  get best(): { metric: number | null; checkpoint: string | null } {
    return {
      metric: Number.isFinite(this.#best) ? this.#best : null,
      checkpoint: this.#bestCheckpoint,
    };
  }

  exportInfo(): Partial<ExportInfo> {
    return { evalLoss: this.#last };
  }
}

/** Generation eval on fixed held-out questions. */
export class GenEvalCallback implements TrainerCallback {
  readonly name = "gen_eval";
  readonly #pool = new ImagePool({ workers: 0 });
  /** The rows of the latest generation eval. */
  rows: GenRow[] | undefined;

  constructor(readonly samples: GenSample[]) {}

  async run(t: TrainerView, step: number): Promise<void> {
    const a = t.args;
    const res = await generationEval(t.model, t.processor, this.#pool, this.samples, {
      maxNewTokens: a.gen_max_new_tokens,
      temperature: a.gen_temperature,
      numBeams: a.gen_num_beams,
      seed: a.seed,
      batchSize: a.per_device_train_batch_size,
      onRow: (r) =>
        t.say(
          `[gen step ${step}] Q: ${r.question}\n  reference: ${r.reference}\n  answer:    ` +
            `${r.answer}${r.exact ? "  ✓" : ""}`,
        ),
    });
    t.metrics.log({
      type: "gen",
      step,
      exact_match: res.exactMatch,
      samples: res.rows.length,
      seconds: res.seconds,
      rows: res.rows.map((r) => ({
        id: r.id,
        question: r.question,
        reference: r.reference,
        answer: r.answer,
      })),
    });
    this.rows = res.rows;
  }

  onStart(t: TrainerView): Promise<void> {
    return this.run(t, 0);
  }

  async onStep(t: TrainerView, step: number): Promise<void> {
    if (step % t.args.gen_steps === 0) await this.run(t, step);
  }

  onEnd(t: TrainerView, step: number): Promise<void> {
    return this.run(t, step);
  }

  exportInfo(): Partial<ExportInfo> {
    const r = this.rows;
    return r?.length ? { exactMatch: r.filter((x) => x.exact).length / r.length } : {};
  }

  close(): void {
    this.#pool.close();
  }
}
