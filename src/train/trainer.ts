// One training run of one stage, from parsed flags to the final model directory — the code path
// of `cli/train.ts`, the demo and library users (mod.ts exports it).
//
//   1. where: a new run directory, or the run and checkpoint being resumed (flags must match);
//   2. the stage (stages.ts) opens the model, says what trains and opens the data;
//   3. the loop: StepRunner steps (no readback) → every logging_steps one readback for metrics;
//      callbacks between steps (eval loss, generation eval, …); a checkpoint every save_steps
//      (checkpoint.ts: save and restore are one mirrored pair); non-finite steps are skipped on
//      the GPU and reported, and max_nonfinite_steps in a row stop the run;
//   4. the final model directory, the loss plot, optionally the hub upload.

import { join, resolve } from "node:path";
import { announce } from "../gpu/announce.ts";
import { Gpu } from "../gpu/device.ts";
import { pathKind } from "../io/file.ts";
import type { SiqvlProcessor } from "../data/processor.ts";
import type { SiqvlModel } from "../models/siqvl.ts";
import { setDropoutSeed } from "../nn/dropout.ts";
import { scale } from "../tensor/ops/elementwise.ts";
import { checkpointStats, setCheckpointBudget } from "../tensor/tape.ts";
import {
  DEFAULT_ACTIVATION_BUDGET_MB,
  finalizeArgs,
  parseTrainArgs,
  type TrainArgs,
} from "./args.ts";
import {
  EvalLossCallback,
  GenEvalCallback,
  type TrainerCallback,
  type TrainerView,
} from "./callbacks.ts";
import {
  loadTrainingCheckpoint,
  lockRunDir,
  readTrainerState,
  removeStaleTemps,
  resolveResume,
  resumeConflicts,
  rotateCheckpoints,
  runBaseName,
  runDirName,
  saveTrainingCheckpoint,
  stageDir as stageDirOf,
  type TrainerState,
  type TrainingParts,
  writeTrainerState,
} from "./checkpoint.ts";
import { type ExportInfo, writeFinalModel, writeModelDir } from "./export.ts";
import type { GenRow } from "./gen_eval.ts";
import { type MetricRecord, MetricsLog } from "./metrics.ts";
import { AdamW } from "./optimizer.ts";
import { writeLossPlot } from "./plot.ts";
import { formatDuration, Progress } from "./progress.ts";
import { LrSchedule, warmupStepsFor } from "./schedule.ts";
import { applyPreset, presetValues, stageFor } from "./stages.ts";
import { frozenStorageDtype } from "./supervised.ts";
import { writeJson } from "../io/file.ts";
import type { SiqvlBundle } from "../models/factory.ts";
import type { Stage, StageData } from "./stage.ts";
import { type LossModel, type StepBatch, StepRunner, type StepStats } from "./step.ts";
import { formatSkips, StepLog } from "./step_log.ts";
import { profilePath, ProfileWindow, type TrainProfile } from "./profile_window.ts";

/** Options of {@link runTraining}. */
export interface RunOptions {
  args: TrainArgs;
  /** Where progress and messages go (default: console.log). */
  log?: (msg: string) => void;
  /** Extra callbacks, run after the built-in eval-loss and generation-eval ones. */
  callbacks?: TrainerCallback[];
  /** Stop after this many optimizer steps of this process without a final save (tests). */
  killAfterSteps?: number;
  /** Return the trained model (the caller disposes it) instead of freeing it. */
  keepModel?: boolean;
  /** Progress bar sink (tests). */
  progress?: { write(text: string): void; isTTY: boolean };
  /** Test hook: make the loss of these optimizer steps NaN (to exercise the non-finite path). */
  faultSteps?: (step: number) => boolean;
}

/** How a run ended. */
export type RunStatus = "completed" | "killed" | "stopped-nonfinite" | "early-stopped";

/** What a run produced. */
export interface RunResult {
  status: RunStatus;
  runDir: string;
  stageDir: string;
  /** The final model directory (the stage dir) when the run completed. */
  finalDir: string | null;
  lastCheckpoint: string | null;
  globalStep: number;
  totalSteps: number;
  /** Every step's statistics read back in this process. */
  steps: StepStats[];
  metrics: MetricRecord[];
  evalLoss?: number;
  genRows?: GenRow[];
  plotPath: string;
  metricsPath: string;
  tensorboardPath: string | null;
  /** The previous stage's result the run started from. */
  fromDir?: string;
  /** --profile: the profiled window (also in `profilePath`), null when no step was profiled. */
  profile?: TrainProfile | null;
  profilePath?: string;
  /**
   * Gradient checkpointing in this process's first step: block forwards that kept their
   * activations (within --activation_budget_mb) and that recompute in backward.
   */
  checkpointing?: { kept: number; recomputed: number };
  model?: SiqvlModel;
  processor?: SiqvlProcessor;
  seconds: number;
}

function newRunDir(a: TrainArgs): string {
  const base = a.run_name ??
    runDirName(a.vision_model_name_or_path, a.text_model_name_or_path, a.stage);
  let dir = join(a.output_dir, base);
  for (let k = 2; pathKind(dir); k++) dir = join(a.output_dir, `${base}-${k}`);
  return dir;
}

/** Where a run writes. */
interface RunLocation {
  runDir: string;
  stageDir: string;
  /** The checkpoint being resumed, else null. */
  checkpoint: string | null;
  resumed: TrainerState | null;
}

/** Where a run writes: a new run directory, or the run and checkpoint being resumed. */
async function locateRun(a: TrainArgs, log: (s: string) => void): Promise<RunLocation> {
  if (!a.resume_from_checkpoint) {
    const runDir = resolve(newRunDir(a));
    return { runDir, stageDir: stageDirOf(runDir, a.stage), checkpoint: null, resumed: null };
  }
  const r = resolveResume(
    a.resume_from_checkpoint,
    a.output_dir,
    a.vision_model_name_or_path,
    a.text_model_name_or_path,
    a.stage,
  );
  log(`[siqvl] resuming from ${r.checkpoint}`);
  const resumed = await readTrainerState(r.checkpoint);
  const diffs = resumeConflicts(resumed.args, a);
  if (diffs.length) {
    throw new Error(
      `cannot resume: these flags differ from the checkpoint's run: ${diffs.join("; ")}`,
    );
  }
  return {
    runDir: resolve(r.runDir),
    stageDir: resolve(r.stageDir),
    checkpoint: r.checkpoint,
    resumed,
  };
}

/** Optimizer steps of the run: --max_steps, else one pass over the data. */
function totalStepsFor(a: TrainArgs, data: StageData<StepBatch>): number {
  if (a.max_steps > 0) return a.max_steps;
  if (!isFinite(data.numTrain)) {
    throw new Error(
      `--max_steps ${a.max_steps}: one pass over ${data.description} has no end; give ` +
        "--max_steps or --max_samples",
    );
  }
  const perStep = a.per_device_train_batch_size * a.gradient_accumulation_steps;
  return Math.max(1, Math.ceil(data.numTrain / perStep));
}

/** A loss model whose loss is NaN on the steps `fault` names (tests of the non-finite path). */
function withFaults<B extends StepBatch>(
  base: LossModel<B>,
  fault: (step: number) => boolean,
  step: () => number,
): LossModel<B> {
  return {
    statNames: base.statNames,
    lossOf(b) {
      const out = base.lossOf(b);
      if (!fault(step())) return out;
      return { ...out, loss: scale(out.loss, NaN), dispose: [...(out.dispose ?? []), out.loss] };
    },
  };
}

/** The facts of the model card (train settings, results of the callbacks and the stage). */
function exportInfoFor(
  a: TrainArgs,
  stage: Stage<StepBatch>,
  bundle: SiqvlBundle,
  run: { globalStep: number; trainLoss: number | undefined; numTrainable: number },
  callbacks: TrainerCallback[],
): ExportInfo {
  return {
    visionId: a.vision_model_name_or_path,
    textId: a.text_model_name_or_path,
    plan: stage.plan,
    globalStep: run.globalStep,
    learningRate: a.learning_rate,
    batchSize: a.per_device_train_batch_size,
    gradientAccumulation: a.gradient_accumulation_steps,
    lora: bundle.model.text.loraLinears().length
      ? {
        r: a.lora_r,
        alpha: a.lora_alpha,
        dropout: a.lora_dropout,
        targets: a.lora_target_modules,
      }
      : undefined,
    dataset: a.data_path,
    subsets: a.data_path.startsWith("shapes") || /\.jsonl?$/.test(a.data_path)
      ? undefined
      : a.sub_sets,
    trainLoss: run.trainLoss,
    numTrainable: run.numTrainable,
    numTotal: bundle.model.numParameters(),
    precision: `${frozenStorageDtype(a)} storage of frozen weights; f32 math, activations, ` +
      "gradients, trainable weights and AdamW moments",
    genMaxNewTokens: a.gen_max_new_tokens,
    tokenizerFrom: bundle.tokenizerFrom,
    ...Object.assign({}, ...callbacks.map((c) => c.exportInfo?.() ?? {})),
    ...stage.exportInfo?.(),
  };
}

/** The built-in callbacks for what the stage's data offers and the flags ask for. */
async function builtinCallbacks(
  a: TrainArgs,
  data: StageData<StepBatch>,
  loss: LossModel<StepBatch>,
): Promise<{
  evalCb: EvalLossCallback<StepBatch> | null;
  genCb: GenEvalCallback | null;
  all: TrainerCallback[];
}> {
  const evalCb = data.evalSource ? new EvalLossCallback(data.evalSource, loss) : null;
  const genCb = data.genSamples.length ? new GenEvalCallback(data.genSamples) : null;
  // Benchmark tasks (--eval_tasks, src/eval/callback.ts); task files are checked here.
  const benchCb = a.eval_tasks?.length
    ? await (await import("../eval/callback.ts")).EvalTasksCallback.create(
      a.eval_tasks,
      a.eval_limit,
    )
    : null;
  const all: TrainerCallback[] = [];
  for (const c of [evalCb, genCb, benchCb]) if (c) all.push(c);
  return { evalCb, genCb, all };
}

/** What {@link TrainingRun.open} assembles. */
interface RunFields {
  opts: RunOptions;
  t0: number;
  where: RunLocation;
  stage: Stage<StepBatch>;
  bundle: SiqvlBundle;
  from: string | null;
  cleanup: (() => Promise<void> | void)[];
  data: StageData<StepBatch>;
  totalSteps: number;
  parts: TrainingParts & { optimizer: AdamW; schedule: LrSchedule };
  numTrainable: number;
  runner: StepRunner<StepBatch>;
  builtin: { evalCb: EvalLossCallback<StepBatch> | null; genCb: GenEvalCallback | null };
  callbacks: TrainerCallback[];
  metrics: MetricsLog;
  progress: Progress;
  steps: StepLog;
  resumedStep: number;
}

/** One training run: set up by {@link TrainingRun.open}, then `loop()`, `finish()`, `close()`. */
class TrainingRun {
  globalStep = 0;
  lastCheckpoint: string | null;
  profiler: ProfileWindow | null = null;
  checkpointing: { kept: number; recomputed: number } | undefined;
  readonly view: TrainerView;
  readonly metricsPath: string;
  readonly plotPath: string;

  readonly opts: RunOptions;
  readonly t0: number;
  readonly where: RunLocation;
  readonly stage: Stage<StepBatch>;
  readonly bundle: SiqvlBundle;
  readonly from: string | null;
  readonly cleanup: (() => Promise<void> | void)[];
  readonly data: StageData<StepBatch>;
  readonly totalSteps: number;
  readonly parts: TrainingParts & { optimizer: AdamW; schedule: LrSchedule };
  readonly numTrainable: number;
  readonly runner: StepRunner<StepBatch>;
  readonly builtin: { evalCb: EvalLossCallback<StepBatch> | null; genCb: GenEvalCallback | null };
  readonly callbacks: TrainerCallback[];
  readonly metrics: MetricsLog;
  readonly progress: Progress;
  readonly steps: StepLog;

  private constructor(f: RunFields) {
    this.opts = f.opts;
    this.t0 = f.t0;
    this.where = f.where;
    this.stage = f.stage;
    this.bundle = f.bundle;
    this.from = f.from;
    this.cleanup = f.cleanup;
    this.data = f.data;
    this.totalSteps = f.totalSteps;
    this.parts = f.parts;
    this.numTrainable = f.numTrainable;
    this.runner = f.runner;
    this.builtin = f.builtin;
    this.callbacks = f.callbacks;
    this.metrics = f.metrics;
    this.progress = f.progress;
    this.steps = f.steps;
    this.globalStep = f.resumedStep;
    const { opts, where, bundle, metrics, progress, totalSteps } = f;
    this.lastCheckpoint = where.checkpoint;
    this.view = {
      args: opts.args,
      model: bundle.model,
      processor: bundle.processor,
      metrics,
      totalSteps,
      say: (m) => progress.log(m),
    };
    this.metricsPath = join(where.stageDir, "metrics.jsonl");
    this.plotPath = join(where.stageDir, "loss.svg");
  }

  get args(): TrainArgs {
    return this.opts.args;
  }

  /** Locate the run, open the stage's model and data, build the optimizer, restore a checkpoint. */
  static async open(opts: RunOptions): Promise<TrainingRun> {
    const a = opts.args;
    const log = opts.log ?? ((s: string) => console.log(s));
    const t0 = performance.now();
    const gpu = await announce(undefined, log); // the adapter line, once per process
    const stage = stageFor(a);
    if (a.learning_rate > 0.1 || a.learning_rate < 1e-7) {
      log(
        `[siqvl] warning: --learning_rate ${a.learning_rate} is far outside the usual range ` +
          "(1e-7 … 0.1; SiQ-VL uses 1e-3 for stage 1 and 2e-5 for stage 2)",
      );
    }
    const where = await locateRun(a, log);
    const { runDir, stageDir } = where;
    const ctx = { gpu, args: a, log, resumed: where.resumed };
    const { bundle, from } = await stage.openModel(ctx);
    const { model } = bundle;
    const cleanup: (() => Promise<void> | void)[] = [];
    // A run folder this call creates is removed again if the run fails before its first step.
    const fresh = !pathKind(runDir);
    try {
      await Deno.mkdir(stageDir, { recursive: true });
      cleanup.push(lockRunDir(stageDir));
      for (const n of removeStaleTemps(stageDir)) log(`[siqvl] removed an interrupted save: ${n}`);
      log(`[siqvl] stage ${a.stage} (${stage.describe()}); run directory ${stageDir}`);

      // ---- what trains, on what ----
      const trainable = stage.trainable(model);
      model.text.gradientCheckpointing = a.gradient_checkpointing;
      const budgetMb = a.activation_budget_mb ?? DEFAULT_ACTIVATION_BUDGET_MB;
      const prevBudget = setCheckpointBudget(budgetMb * 2 ** 20);
      cleanup.push(() => void setCheckpointBudget(prevBudget));
      log(
        `[siqvl] gradient checkpointing: ${
          !a.gradient_checkpointing
            ? "off (every block keeps its activations)"
            : budgetMb > 0
            ? `blocks keep activations within ${budgetMb} MiB (--activation_budget_mb), the ` +
              "rest recompute in backward"
            : "every block recomputes in backward"
        }`,
      );
      const numTrainable = trainable.reduce((s, [, t]) => s + t.size, 0);
      const numTotal = model.numParameters();
      log(
        `[siqvl] parameters: ${numTotal.toLocaleString("en-US")} total, ` +
          `${numTrainable.toLocaleString("en-US")} trainable (${trainable.length} tensors, ` +
          `${(100 * numTrainable / numTotal).toFixed(2)}%); frozen weights stored as ` +
          `${frozenStorageDtype(a)}; image tokens per image ${model.imageTokensPerImage}`,
      );
      const data = await stage.openData(ctx, bundle);
      cleanup.push(() => data.close());
      const totalSteps = totalStepsFor(a, data);
      const perStep = a.per_device_train_batch_size * a.gradient_accumulation_steps;
      log(
        `[siqvl] data: ${data.description}; ${
          isFinite(data.numTrain) ? data.numTrain : "unbounded"
        } training samples, ${data.numEval} held out; ${totalSteps} steps of ${perStep} ` +
          `samples (${a.per_device_train_batch_size} × ${a.gradient_accumulation_steps})`,
      );
      const loadSkips = formatSkips(data.train.skipCounts?.() ?? {});
      if (loadSkips) log(`[siqvl] skipped while opening the data (first pass): ${loadSkips}`);

      // ---- optimisation ----
      const optimizer = new AdamW(trainable, {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weightDecay: a.weight_decay,
        maxGradNorm: a.max_grad_norm,
      });
      cleanup.push(() => optimizer.dispose());
      const schedule = new LrSchedule({
        type: a.lr_scheduler_type,
        baseLr: a.learning_rate,
        totalSteps,
        warmupSteps: warmupStepsFor(totalSteps, a.warmup_ratio),
      });
      const baseLoss = stage.lossModel(model);
      let run: TrainingRun | null = null;
      const lossModel = opts.faultSteps
        ? withFaults(baseLoss, opts.faultSteps, () => run?.globalStep ?? 0) // the step being run
        : baseLoss;
      const runner = new StepRunner(gpu, lossModel, optimizer, a.logging_steps);
      cleanup.push(() => runner.dispose());
      setDropoutSeed(a.seed);
      const { evalCb, genCb, all } = await builtinCallbacks(a, data, baseLoss);
      if (genCb) cleanup.push(() => genCb.close());
      const callbacks = [...all, ...(opts.callbacks ?? [])];

      // ---- resume ----
      const parts = { trainable, optimizer, schedule, data: data.train, dropoutForwards: 0 };
      const metricsPath = join(stageDir, "metrics.jsonl");
      let resumed: TrainerState | null = null;
      if (where.checkpoint) {
        resumed = await loadTrainingCheckpoint(where.checkpoint, parts);
        for (const cb of callbacks) {
          const s = resumed.callbacks?.[cb.name];
          if (s !== undefined) cb.restore?.(s);
        }
        // The metrics file continues from the checkpoint: drop what a killed run logged after.
        const lines = (resumed.log_history ?? []).map((r) => JSON.stringify(r) + "\n");
        await Deno.writeTextFile(metricsPath, lines.join(""));
        log(
          `[siqvl] resumed at step ${resumed.global_step} of ${totalSteps} (lr ${schedule.lr()})`,
        );
      } else {
        await Deno.remove(metricsPath).catch(() => {});
      }
      const metrics = new MetricsLog(metricsPath, {
        history: resumed?.log_history ?? [],
        tensorboardDir: a.report_to.includes("tensorboard")
          ? join(runDir, "runs", `stage${a.stage}`)
          : undefined,
      });
      cleanup.push(() => metrics.close());
      await writeJson(join(stageDir, "training_args.json"), { ...a, total_steps: totalSteps });
      const progress = new Progress(totalSteps, resumed?.global_step ?? 0, {
        label: `stage${a.stage}`,
        intervalSec: 30,
        everySteps: a.logging_steps,
        sink: opts.progress,
      });
      cleanup.push(() => progress.done());
      const steps = new StepLog({
        gpu,
        runner,
        optimizer,
        metrics,
        progress,
        samplesPerStep: perStep,
        samplesPerPass: data.numTrain,
        maxNonFinite: a.max_nonfinite_steps,
        consecutiveNonFinite: resumed?.consecutive_nonfinite,
        skipCounts: () => data.train.skipCounts?.() ?? {},
      });
      run = new TrainingRun({
        opts,
        t0,
        where,
        stage,
        bundle,
        from,
        cleanup,
        data,
        totalSteps,
        parts,
        numTrainable,
        runner,
        builtin: { evalCb, genCb },
        callbacks,
        metrics,
        progress,
        steps,
        resumedStep: resumed?.global_step ?? 0,
      });
      return run;
    } catch (e) {
      for (const f of cleanup.reverse()) await f();
      if (!opts.keepModel) model.dispose();
      if (fresh) await Deno.remove(runDir, { recursive: true }).catch(() => {});
      throw e;
    }
  }

  /** trainer_state.json at `step`. */
  state(step: number): TrainerState {
    return {
      global_step: step,
      max_steps: this.totalSteps,
      stage: this.args.stage,
      optimizer_step: this.parts.optimizer.step,
      log_history: this.metrics.records,
      callbacks: Object.fromEntries(
        this.callbacks.filter((c) => c.state).map((c) => [c.name, c.state!()]),
      ),
      best_model_checkpoint: this.builtin.evalCb?.best.checkpoint ?? null,
      consecutive_nonfinite: this.steps.consecutiveNonFinite,
      from_dir: this.from,
      args: this.args,
    };
  }

  /** checkpoint-{step} (skipped inside a streak of non-finite steps), rotation, the plot. */
  async save(step: number): Promise<void> {
    const { args: a, steps, metrics, view } = this;
    const t = performance.now();
    await steps.drain();
    if (steps.pending && step % a.logging_steps === 0) steps.record();
    if (steps.consecutiveNonFinite > 0) {
      // Keep the last good checkpoint as the latest.
      const msg = `checkpoint at step ${step} skipped: the last ${steps.consecutiveNonFinite} ` +
        "step(s) had non-finite loss or gradients";
      view.say(`[siqvl] ${msg}`);
      metrics.log({ type: "event", step, event: "checkpoint_skipped", message: msg });
      return;
    }
    this.parts.dropoutForwards = step * a.gradient_accumulation_steps;
    const stageDir = this.where.stageDir;
    const { model, processor } = this.bundle;
    const info = exportInfoFor(a, this.stage, this.bundle, {
      globalStep: step,
      trainLoss: steps.lastTrainLoss,
      numTrainable: this.numTrainable,
    }, this.callbacks);
    const relativeTo = join(stageDir, `checkpoint-${step}`);
    const path = await saveTrainingCheckpoint(
      stageDir,
      this.parts,
      this.state(step),
      (dir) => writeModelDir(model, processor, dir, info, { relativeTo }),
    );
    this.lastCheckpoint = path;
    for (const cb of this.callbacks) cb.onSave?.(step, path);
    const keep = this.callbacks.map((c) => c.protectedCheckpoint?.()).find((p) => p) ?? undefined;
    for (const r of rotateCheckpoints(stageDir, a.save_total_limit, keep)) {
      view.say(`[siqvl] removed old checkpoint ${r}`);
    }
    await writeLossPlot(this.plotPath, metrics.trainLoss(), metrics.evalLoss());
    view.say(`[siqvl] saved ${path} (${((performance.now() - t) / 1000).toFixed(1)} s)`);
  }

  /** Optimizer steps until the end, a stop condition or the test kill switch. */
  async loop(): Promise<RunStatus> {
    const { args: a, steps, callbacks, view, totalSteps } = this;
    let status: RunStatus = "completed";
    this.bundle.model.train(true);
    if (this.globalStep === 0) {
      for (const cb of callbacks) if (cb.onStart) await steps.paused(() => cb.onStart!(view));
    }
    steps.resetWindow();
    const prof = a.profile
      ? this.profiler = new ProfileWindow(
        this.runner.gpu,
        this.bundle.model,
        this.parts.optimizer,
        this.runner.model,
        {
          steps: a.profile_steps,
          remaining: totalSteps - this.globalStep,
          file: profilePath(this.where.stageDir),
        },
      )
      : null;
    const paused = (f: () => Promise<void>) =>
      prof ? prof.paused(() => steps.paused(f)) : steps.paused(f);
    checkpointStats(true);
    try {
      status = await this.#steps(prof, paused);
    } finally {
      await prof?.close();
    }
    if (steps.tooManyNonFinite) status = "stopped-nonfinite";
    await steps.drain();
    steps.record();
    this.progress.done();
    return status;
  }

  /** The loop of {@link loop}, with the profile window's hooks. */
  async #steps(
    prof: ProfileWindow | null,
    paused: (f: () => Promise<void>) => Promise<void>,
  ): Promise<RunStatus> {
    const { args: a, steps, callbacks, view, data, totalSteps } = this;
    let status: RunStatus = "completed";
    let stepsThisProcess = 0;
    while (this.globalStep < totalSteps && status === "completed") {
      await prof?.before(stepsThisProcess + 1);
      const window: StepBatch[] = [];
      for (let k = 0; k < a.gradient_accumulation_steps; k++) {
        const b = await data.train.next();
        if (!b) throw new Error(`the training data (${data.description}) ended unexpectedly`);
        window.push(b);
      }
      const step = ++this.globalStep;
      await this.runner.run(step, window, this.parts.schedule.lr());
      this.parts.schedule.advance();
      stepsThisProcess++;
      if (step % a.logging_steps === 0 || step === totalSteps) {
        await steps.drain();
        steps.record();
      } else this.progress.update(step);
      if (stepsThisProcess === 1) this.#logCheckpointing();
      await prof?.after(stepsThisProcess, step, step === totalSteps || steps.tooManyNonFinite);
      if (steps.tooManyNonFinite) break;
      if (step !== totalSteps) {
        for (const cb of callbacks) if (cb.onStep) await paused(() => cb.onStep!(view, step));
        if (step % a.save_steps === 0) await paused(() => this.save(step));
      }
      if (steps.tooManyNonFinite) break;
      if (callbacks.some((c) => c.shouldStop?.())) status = "early-stopped";
      else if (stepsThisProcess === this.opts.killAfterSteps) status = "killed";
    }
    return status;
  }

  /** After the first step: how many checkpointed block forwards kept activations (once). */
  #logCheckpointing(): void {
    const { kept, recomputed } = checkpointStats(true);
    if (!this.args.gradient_checkpointing || kept + recomputed === 0) return;
    this.checkpointing = { kept, recomputed };
    const budget = this.args.activation_budget_mb ?? DEFAULT_ACTIVATION_BUDGET_MB;
    this.view.say(
      `[siqvl] gradient checkpointing, step ${this.globalStep}: ${kept} of ${
        kept + recomputed
      } block forwards kept their activations (budget ${budget} MiB), ${recomputed} recompute ` +
        `in backward (${this.bundle.model.text.layers.length} blocks per forward)`,
    );
  }

  /** Final evaluations, the final model directory and the hub upload (unless stopped or killed). */
  async finish(status: RunStatus): Promise<RunResult> {
    const { args: a, metrics, where, bundle, callbacks, steps, globalStep } = this;
    const log = this.opts.log ?? ((s: string) => console.log(s));
    let finalDir: string | null = null;
    if (status === "stopped-nonfinite") {
      log(
        `[siqvl] stopping: ${steps.consecutiveNonFinite} consecutive steps with non-finite loss ` +
          `or gradients. Last good checkpoint: ${this.lastCheckpoint ?? "(none saved yet)"}`,
      );
    } else if (status !== "killed") {
      for (const cb of callbacks) if (cb.onEnd) await cb.onEnd(this.view, globalStep);
      const info = exportInfoFor(a, this.stage, bundle, {
        globalStep,
        trainLoss: steps.lastTrainLoss,
        numTrainable: this.numTrainable,
      }, callbacks);
      const hubId = a.push_to_hub
        ? a.hub_model_id ??
          runBaseName(a.vision_model_name_or_path, a.text_model_name_or_path, a.stage)
        : undefined;
      const exp = await writeFinalModel(bundle.model, bundle.processor, where.stageDir, info, {
        mergeLora: a.merge_lora,
        pytorchBin: a.save_pytorch_bin,
        hubId,
      });
      finalDir = exp.dir;
      const { callbacks: _c, consecutive_nonfinite: _n, optimizer_step: _o, ...final } = this
        .state(globalStep);
      await writeTrainerState(where.stageDir, final);
      log(`[siqvl] final model: ${finalDir}${exp.merged ? ` (merged LoRA: ${exp.merged})` : ""}`);
      if (hubId) {
        const { pushToHub } = await import("./hub.ts");
        const url = await pushToHub(finalDir, hubId, { log, stage: a.stage });
        log(`[siqvl] pushed to ${url}`);
      }
    }
    await writeLossPlot(this.plotPath, metrics.trainLoss(), metrics.evalLoss());
    const seconds = (performance.now() - this.t0) / 1000;
    log(
      `[siqvl] stage ${a.stage} ${status} after ${globalStep} steps in ${
        formatDuration(seconds)
      }; plot ${this.plotPath}`,
    );
    const skipped = formatSkips(this.data.train.skipCounts?.() ?? {});
    log(`[siqvl] samples skipped: ${skipped || "none"}`);
    if (this.profiler) log(this.profiler.describe());
    const { evalCb, genCb } = this.builtin;
    return {
      status,
      runDir: where.runDir,
      stageDir: where.stageDir,
      finalDir,
      lastCheckpoint: this.lastCheckpoint,
      globalStep,
      totalSteps: this.totalSteps,
      steps: steps.steps,
      metrics: metrics.records,
      evalLoss: evalCb ? metrics.evalLoss().at(-1)?.[1] : undefined,
      genRows: genCb?.rows,
      plotPath: this.plotPath,
      metricsPath: this.metricsPath,
      tensorboardPath: metrics.tensorboardPath,
      fromDir: this.from ?? undefined,
      ...(this.profiler
        ? { profile: this.profiler.report, profilePath: profilePath(where.stageDir) }
        : {}),
      checkpointing: this.checkpointing,
      seconds,
      ...(this.opts.keepModel ? { model: bundle.model, processor: bundle.processor } : {}),
    };
  }

  /** Release data, optimizer state, logs, the run lock (and the model unless kept). */
  async close(): Promise<void> {
    for (const f of this.cleanup.reverse()) await f();
    if (!this.opts.keepModel) this.bundle.model.dispose();
  }
}

/** Train one stage: set up, loop, finish. */
export async function runTraining(opts: RunOptions): Promise<RunResult> {
  const run = await TrainingRun.open(opts);
  try {
    return await run.finish(await run.loop());
  } finally {
    await run.close();
  }
}

/** Flags → validated TrainArgs (a preset, when named, fills the flags not given). */
export async function argsFromArgv(
  argv: string[],
  env: Record<string, string | undefined> = {},
  log: (s: string) => void = console.log,
): Promise<TrainArgs | null> {
  const parsed = parseTrainArgs(argv, env);
  if (parsed.help) return null;
  let args = parsed.args;
  if (args.preset) {
    const gpu = await Gpu.get();
    const p = presetValues(args.preset, args.stage, {
      isFallbackAdapter: gpu.isFallbackAdapter,
      maxBufferSize: gpu.limits.maxBufferSize,
      maxStorageBufferBindingSize: gpu.limits.maxStorageBufferBindingSize,
      description: gpu.adapterDescription,
    });
    args = { ...args };
    const set = applyPreset(args, parsed.explicit, p.values);
    log(
      `[siqvl] preset "${p.name}" (${p.why}) sets: ${
        set.map((k) => `${k}=${JSON.stringify((args as unknown as Record<string, unknown>)[k])}`)
          .join(", ") || "nothing (all given)"
      }`,
    );
  }
  return finalizeArgs(args, parsed.explicit);
}

/** Train from command-line flags (what `deno task train` runs; the demo calls it too). */
export async function trainFromArgv(
  argv: string[],
  opts: Omit<RunOptions, "args"> & { env?: Record<string, string | undefined> } = {},
): Promise<RunResult> {
  const args = await argsFromArgv(argv, opts.env ?? {}, opts.log);
  if (!args) throw new Error("--help is not a training run");
  return runTraining({ ...opts, args });
}
