// One training run of one stage, from parsed flags to the final model directory — the code path
// of `cli/train.ts` and of the demo.
//
//   1. resolve the models (local directories or hub ids), the stage-1 result for stage 2, and a
//      checkpoint to resume from;
//   2. build the model (stage 1: SigLIP + Qwen2 + a fresh projector; stage 2: the stage-1 result,
//      plus fresh LoRA adapters with --use_lora), put weights in their storage dtypes, freeze and
//      unfreeze per stage;
//   3. data: processor (chat template, labels incl. <|im_end|>), loader with a resumable order;
//   4. the loop: StepRunner steps (no readback) → every logging_steps one readback for metrics;
//      eval loss every eval_steps; generation eval every gen_steps; a checkpoint every
//      save_steps (atomic; rotation); non-finite steps are skipped on the GPU and reported, and
//      max_nonfinite_steps in a row stop the run with the last good checkpoint;
//   5. the final model directory, the loss plot, optionally the hub upload.

import { join, resolve } from "node:path";
import { Gpu } from "../gpu/device.ts";
import { type SiqvlProcessor, SiqvlProcessor as Processor } from "../data/processor.ts";
import { TextTokenizer } from "../data/tokenizer.ts";
import type { Dataset, Sample } from "../data/datasets/types.ts";
import { ImagePool } from "../data/image_pool.ts";
import { openTensors } from "../io/reader.ts";
import { writeSafetensors } from "../io/safetensors.ts";
import { readJson } from "../io/file.ts";
import { buildSiqvl, loadSiqvl } from "../models/checkpoint.ts";
import type { SiqvlModel } from "../models/siqvl.ts";
import { tensorToSafetensors } from "../models/tensor_bytes.ts";
import { nextDropoutStep, setDropoutSeed } from "../nn/dropout.ts";
import { addInPlace, scale, zeros } from "../tensor/ops/elementwise.ts";
import { keep, noGrad, type Tensor, tidy } from "../tensor/tensor.ts";
import type { TrainArgs } from "./args.ts";
import {
  findRuns,
  hasFinalModel,
  removeStaleTemps,
  resolveResume,
  rotateCheckpoints,
  runBaseName,
  runDirName,
  saveCheckpointDir,
  stageDir as stageDirOf,
  writeJsonAtomic,
} from "./checkpoint.ts";
import { datasetLength } from "../data/datasets/split.ts";
import { BatchLoader, type LoaderState, openDatasets } from "./data.ts";
import { type ExportInfo, writeFinalModel } from "./export.ts";
import { generationEval, type GenRow, type GenSample } from "./gen_eval.ts";
import { type MetricRecord, MetricsLog } from "./metrics.ts";
import {
  applyStagePlan,
  frozenStorageDtype,
  microBatchOf,
  prepareStorage,
  siqvlLossModel,
} from "./model_adapter.ts";
import { AdamW } from "./optimizer.ts";
import { writeLossPlot } from "./plot.ts";
import { formatDuration, Progress } from "./progress.ts";
import { LrSchedule, warmupStepsFor } from "./schedule.ts";
import { type StagePlan, stagePlan } from "./stages.ts";
import { type LossModel, type MicroBatch, StepRunner, type StepStats } from "./step.ts";
import { resolveModelSource } from "./sources.ts";

/** Options of {@link runTraining}. */
export interface RunOptions {
  args: TrainArgs;
  /** Where progress and messages go (default: console.log). */
  log?: (msg: string) => void;
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
  stage1Dir?: string;
  model?: SiqvlModel;
  processor?: SiqvlProcessor;
  seconds: number;
}

/** Flags that must be equal to resume a run. */
const RESUME_KEYS: (keyof TrainArgs)[] = [
  "stage",
  "data_path",
  "sub_sets",
  "sub_sets_weights",
  "vision_model_name_or_path",
  "text_model_name_or_path",
  "use_lora",
  "lora_r",
  "lora_alpha",
  "lora_dropout",
  "lora_target_modules",
  "pixel_shuffle_factor",
  "per_device_train_batch_size",
  "gradient_accumulation_steps",
  "max_samples",
  "max_eval_samples",
  "learning_rate",
  "lr_scheduler_type",
  "warmup_ratio",
  "weight_decay",
  "seed",
  "bf16",
  "fp16",
  "max_length",
];

/** The stage-1 result a stage-2 run starts from (explicit path, else the latest matching run). */
export function findStage1(a: TrainArgs, log: (s: string) => void): string {
  if (a.stage_1_checkpoint_path) {
    const p = a.stage_1_checkpoint_path;
    if (hasFinalModel(p)) return p;
    if (hasFinalModel(join(p, "stage1"))) return join(p, "stage1");
    throw new Error(
      `--stage_1_checkpoint_path ${p}: no finished stage-1 model there (config.json + ` +
        "model.safetensors)",
    );
  }
  const runs = findRuns(
    a.output_dir,
    a.vision_model_name_or_path,
    a.text_model_name_or_path,
    1,
    hasFinalModel,
  );
  if (!runs.length) {
    throw new Error(
      `stage 2 needs a stage-1 result: none found as ${
        runBaseName(a.vision_model_name_or_path, a.text_model_name_or_path, 1)
      }_*/stage1 under ${a.output_dir}; run --stage 1 first or pass --stage_1_checkpoint_path`,
    );
  }
  log(`stage 2 starts from the latest stage-1 result: ${runs[0].stageDir}`);
  return runs[0].stageDir;
}

function newRunDir(a: TrainArgs): string {
  const base = a.run_name ??
    runDirName(a.vision_model_name_or_path, a.text_model_name_or_path, a.stage);
  let dir = join(a.output_dir, base);
  for (let k = 2; exists(dir); k++) dir = join(a.output_dir, `${base}-${k}`);
  return dir;
}

function exists(p: string): boolean {
  try {
    Deno.statSync(p);
    return true;
  } catch {
    return false;
  }
}

/** Train one stage. */
export async function runTraining(opts: RunOptions): Promise<RunResult> {
  const a = opts.args;
  const log = opts.log ?? ((s: string) => console.log(s));
  const t0 = performance.now();
  const gpu = await Gpu.get();
  log(`[siqvl] WebGPU: ${gpu.describe()}`);
  const plan = stagePlan(a);

  // ---- where things are ----
  let resume: { checkpoint: string; stageDir: string; runDir: string } | null = null;
  if (a.resume_from_checkpoint) {
    resume = resolveResume(
      a.resume_from_checkpoint,
      a.output_dir,
      a.vision_model_name_or_path,
      a.text_model_name_or_path,
      a.stage,
    );
    log(`[siqvl] resuming from ${resume.checkpoint}`);
  }
  let resumeState: TrainerState | null = null;
  if (resume) {
    resumeState = await readJson<TrainerState>(join(resume.checkpoint, "trainer_state.json"));
    checkResumeArgs(resumeState.args, a);
  }
  const stage1Dir = a.stage === 2
    ? (resumeState?.stage1_dir && hasFinalModel(resumeState.stage1_dir)
      ? resumeState.stage1_dir
      : findStage1(a, log))
    : undefined;
  const runDir = resume ? resolve(resume.runDir) : resolve(newRunDir(a));
  const stageDir = resume ? resolve(resume.stageDir) : stageDirOf(runDir, a.stage);
  await Deno.mkdir(stageDir, { recursive: true });
  for (const n of removeStaleTemps(stageDir)) log(`[siqvl] removed an interrupted save: ${n}`);
  log(`[siqvl] stage ${a.stage} (${describePlan(plan)}); run directory ${stageDir}`);

  // ---- model ----
  const { model, processor, tokenizerFrom } = await buildModel(gpu, a, plan, stage1Dir, log);
  const trainable = applyStagePlan(model, plan);
  model.text.gradientCheckpointing = a.gradient_checkpointing;
  const numTrainable = trainable.reduce((s, [, t]) => s + t.size, 0);
  const numTotal = model.numParameters();
  log(
    `[siqvl] parameters: ${numTotal.toLocaleString("en-US")} total, ` +
      `${numTrainable.toLocaleString("en-US")} trainable (${trainable.length} tensors, ` +
      `${(100 * numTrainable / numTotal).toFixed(2)}%); frozen weights stored as ` +
      `${frozenStorageDtype(a)}; image tokens per image ${model.imageTokensPerImage}`,
  );

  // ---- data ----
  const ds = await openDatasets({
    dataPath: a.data_path,
    subSets: a.sub_sets,
    subSetsWeights: a.sub_sets_weights,
    seed: a.seed,
    maxSamples: a.max_samples,
    maxEvalSamples: a.max_eval_samples,
    imageSize: processor.image.size,
  });
  const perStep = a.per_device_train_batch_size * a.gradient_accumulation_steps;
  const nTrain = datasetLength(ds.train);
  let totalSteps = a.max_steps;
  if (totalSteps <= 0) {
    if (!isFinite(nTrain)) {
      throw new Error(
        `--max_steps ${a.max_steps}: one pass over ${ds.description} has no end; give ` +
          "--max_steps or --max_samples",
      );
    }
    totalSteps = Math.max(1, Math.ceil(nTrain / perStep));
  }
  log(
    `[siqvl] data: ${ds.description}; ${isFinite(nTrain) ? nTrain : "unbounded"} training ` +
      `samples, ${a.max_eval_samples} held out; ${totalSteps} steps of ${perStep} samples ` +
      `(${a.per_device_train_batch_size} × ${a.gradient_accumulation_steps})`,
  );
  const imageWorkers = a.dataloader_num_workers > 0 && !a.data_path.startsWith("shapes")
    ? Math.min(a.dataloader_num_workers, 4)
    : 0;
  const loader = new BatchLoader({
    dataset: ds.train,
    processor,
    batchSize: a.per_device_train_batch_size,
    maxLength: a.max_length ?? undefined,
    prefetch: Math.min(a.dataloader_num_workers, 4),
    imageWorkers,
    cycle: true,
  });
  const pool = new ImagePool({ workers: 0 });
  const genSamples = ds.eval && a.gen_samples > 0
    ? await fixedGenSamples(ds.eval, a.gen_samples, a.seed)
    : [];

  // ---- optimisation ----
  const optimizer = new AdamW(trainable, {
    beta1: 0.9,
    beta2: 0.999,
    eps: 1e-8,
    weightDecay: a.weight_decay,
    maxGradNorm: a.max_grad_norm,
  });
  const schedule = new LrSchedule({
    type: a.lr_scheduler_type,
    baseLr: a.learning_rate,
    totalSteps,
    warmupSteps: warmupStepsFor(totalSteps, a.warmup_ratio),
  });
  let currentStep = 0;
  const baseLoss = siqvlLossModel(model);
  const fault = opts.faultSteps;
  const lossModel: LossModel = fault
    ? {
      lossOf(mb) {
        const out = baseLoss.lossOf(mb);
        if (!fault(currentStep)) return out;
        return { ...out, loss: scale(out.loss, NaN), dispose: [...(out.dispose ?? []), out.loss] };
      },
    }
    : baseLoss;
  const runner = new StepRunner(gpu, lossModel, optimizer, a.logging_steps);
  setDropoutSeed(a.seed);

  // ---- logs ----
  const metricsPath = join(stageDir, "metrics.jsonl");
  const plotPath = join(stageDir, "loss.svg");
  let history: MetricRecord[] = [];
  let globalStep = 0;
  let lastCheckpoint: string | null = null;
  let bestEval = Infinity, bestCheckpoint: string | null = null, evalsWithoutGain = 0;
  let consecutiveNonFinite = 0;
  let resumedLoaderState: LoaderState | null = null;
  if (resume && resumeState) {
    let restored: LoaderState | null;
    [globalStep, restored] = await restoreCheckpoint(resume.checkpoint, resumeState, {
      trainable,
      optimizer,
      schedule,
      loader,
    });
    resumedLoaderState = restored;
    for (let i = 0; i < globalStep * a.gradient_accumulation_steps; i++) nextDropoutStep();
    history = resumeState.log_history ?? [];
    lastCheckpoint = resume.checkpoint;
    bestEval = resumeState.best_metric ?? Infinity;
    bestCheckpoint = resumeState.best_model_checkpoint ?? null;
    evalsWithoutGain = resumeState.evals_without_gain ?? 0;
    consecutiveNonFinite = resumeState.consecutive_nonfinite ?? 0;
    // The metrics file continues from the checkpoint: drop what a killed run logged after it.
    await Deno.writeTextFile(
      metricsPath,
      history.map((r) => JSON.stringify(r) + "\n").join(""),
    );
    log(`[siqvl] resumed at step ${globalStep} of ${totalSteps} (lr ${schedule.lr()})`);
  } else {
    await Deno.remove(metricsPath).catch(() => {});
  }
  const wantsTb = a.report_to.includes("tensorboard");
  const metrics = new MetricsLog(metricsPath, {
    history,
    tensorboardDir: wantsTb ? join(runDir, "runs", `stage${a.stage}`) : undefined,
  });
  await writeJsonAtomic(join(stageDir, "training_args.json"), { ...a, total_steps: totalSteps });

  const progress = new Progress(totalSteps, globalStep, {
    label: `stage${a.stage}`,
    intervalSec: 30,
    everySteps: a.logging_steps,
    sink: opts.progress,
  });
  const say = (m: string) => progress.log(m);

  // ---- callbacks ----
  let lastLoaderState: LoaderState | null = resumedLoaderState;
  const allSteps: StepStats[] = [];
  let windowStart = performance.now();
  let pausedMs = 0;
  let sinceLog: StepStats[] = [];
  let lastTrainLoss: number | undefined;
  let stopReason: RunStatus | null = null;

  const drain = async (): Promise<void> => {
    const stats = await runner.drain();
    for (const s of stats) {
      allSteps.push(s);
      sinceLog.push(s);
      if (s.finite) {
        consecutiveNonFinite = 0;
        continue;
      }
      consecutiveNonFinite++;
      // The GPU left weights and moments untouched: do not count the update.
      optimizer.step = Math.max(0, optimizer.step - 1);
      const msg = `step ${s.step}: non-finite loss or gradients (loss ${s.loss}, grad norm ` +
        `${s.gradNorm}); update skipped`;
      say(`[siqvl] ${msg}`);
      metrics.log({ type: "event", step: s.step, event: "skipped_step", message: msg });
      if (consecutiveNonFinite >= a.max_nonfinite_steps) stopReason = "stopped-nonfinite";
    }
  };

  const logTrain = (): void => {
    const now = performance.now();
    const ms = Math.max(1, now - windowStart - pausedMs);
    const st = sinceLog;
    if (!st.length) return;
    const fin = st.filter((s) => s.finite);
    const last = st[st.length - 1];
    const loss = fin.length ? fin.reduce((s, x) => s + x.loss, 0) / fin.length : NaN;
    const tokens = st.reduce((s, x) => s + x.tokens, 0);
    const samples = st.reduce((s, x) => s + x.samples, 0);
    const mem = gpu.memory();
    const rec = metrics.log({
      type: "train",
      step: last.step,
      epoch: Number((last.step * perStep / (isFinite(nTrain) ? nTrain : Infinity)).toFixed(4)) ||
        0,
      loss,
      lr: last.lr,
      grad_norm: last.gradNorm,
      tokens_per_sec: tokens / (ms / 1000),
      samples_per_sec: samples / (ms / 1000),
      step_time_sec: ms / 1000 / st.length,
      gpu_live_bytes: mem.live,
      gpu_peak_bytes: mem.peak,
      skipped_steps: st.length - fin.length,
    });
    lastTrainLoss = Number.isFinite(loss) ? loss : lastTrainLoss;
    progress.update(
      last.step,
      `loss ${fmtNum(loss)} lr ${last.lr.toExponential(2)} grad ${fmtNum(last.gradNorm)} ` +
        `${Math.round(rec.tokens_per_sec as number)} tok/s`,
    );
    sinceLog = [];
    windowStart = now;
    pausedMs = 0;
  };

  const evalLoss = async (step: number): Promise<number | undefined> => {
    if (!ds.eval) return undefined;
    const t = performance.now();
    ds.eval.rewind(0);
    const evLoader = new BatchLoader({
      dataset: ds.eval,
      processor,
      batchSize: a.per_device_train_batch_size,
      maxLength: a.max_length ?? undefined,
      cycle: false,
    });
    model.eval();
    const acc = keep(noGrad(() => zeros(gpu, [])));
    let n = 0, rows = 0;
    try {
      for (;;) {
        const b = await evLoader.next();
        if (!b) break;
        const mb = microBatchOf(b.data);
        if (!mb.numLossTokens) continue;
        noGrad(() =>
          tidy(() => {
            const out = lossModel.lossOf(mb);
            addInPlace(acc, out.loss, mb.numLossTokens);
            for (const x of out.dispose ?? []) x.dispose();
          })
        );
        n += mb.numLossTokens;
        rows += mb.numSamples;
      }
      const sum = await acc.item();
      const loss = n ? sum / n : NaN;
      metrics.log({
        type: "eval",
        step,
        loss,
        perplexity: Math.min(Math.exp(loss), 10000),
        samples: rows,
        tokens: n,
        seconds: (performance.now() - t) / 1000,
      });
      say(`[siqvl] eval at step ${step}: loss ${fmtNum(loss)} over ${rows} samples`);
      return loss;
    } finally {
      acc.dispose();
      evLoader.close();
      model.train(true);
      pausedMs += performance.now() - t;
    }
  };

  const genEval = async (step: number): Promise<GenRow[] | undefined> => {
    if (!genSamples.length) return undefined;
    const t = performance.now();
    try {
      const res = await generationEval(model, processor, pool, genSamples, {
        maxNewTokens: a.gen_max_new_tokens,
        temperature: a.gen_temperature,
        numBeams: a.gen_num_beams,
        seed: a.seed,
        batchSize: a.per_device_train_batch_size,
        onRow: (r) =>
          say(
            `[gen step ${step}] Q: ${r.question}\n  reference: ${r.reference}\n  answer:    ` +
              `${r.answer}${r.exact ? "  ✓" : ""}`,
          ),
      });
      metrics.log({
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
      return res.rows;
    } finally {
      pausedMs += performance.now() - t;
    }
  };

  const save = async (step: number): Promise<void> => {
    const t = performance.now();
    await drain();
    if (sinceLog.length && step % a.logging_steps === 0) logTrain();
    if (consecutiveNonFinite > 0) {
      // Inside a streak of non-finite steps: keep the last good checkpoint as the latest.
      const msg = `checkpoint at step ${step} skipped: the last ${consecutiveNonFinite} ` +
        "step(s) had non-finite loss or gradients";
      say(`[siqvl] ${msg}`);
      metrics.log({ type: "event", step, event: "checkpoint_skipped", message: msg });
      pausedMs += performance.now() - t;
      return;
    }
    const state: TrainerState = {
      global_step: step,
      max_steps: totalSteps,
      stage: a.stage,
      epoch: lastLoaderState?.epoch ?? 0,
      optimizer_step: optimizer.step,
      log_history: metrics.records,
      best_metric: isFinite(bestEval) ? bestEval : null,
      best_model_checkpoint: bestCheckpoint,
      evals_without_gain: evalsWithoutGain,
      consecutive_nonfinite: consecutiveNonFinite,
      stage1_dir: stage1Dir ?? null,
      trainable: trainable.map(([n]) => n),
      args: a,
    };
    const path = await saveCheckpointDir(stageDir, step, async (dir) => {
      await writeSafetensors(
        join(dir, "trainable.safetensors"),
        Object.fromEntries(trainable.map(([n, p]) => [n, tensorToSafetensors(p)])),
        { format: "pt", step: String(step) },
      );
      const os = await optimizer.exportState();
      await writeSafetensors(
        join(dir, "optimizer.safetensors"),
        Object.fromEntries(
          [...os.tensors].map((
            [n, v],
          ) => [n, { dtype: "F32" as const, shape: [v.length], data: v }]),
        ),
        { format: "pt", step: String(os.step) },
      );
      await writeJsonAtomic(join(dir, "scheduler.json"), schedule.state());
      await writeJsonAtomic(join(dir, "data_state.json"), lastLoaderState);
      await writeJsonAtomic(join(dir, "rng_state.json"), {
        seed: a.seed,
        dropout_forwards: step * a.gradient_accumulation_steps,
      });
      await writeJsonAtomic(join(dir, "trainer_state.json"), state);
    });
    lastCheckpoint = path;
    for (const r of rotateCheckpoints(stageDir, a.save_total_limit, bestCheckpoint ?? undefined)) {
      say(`[siqvl] removed old checkpoint ${r}`);
    }
    await writeLossPlot(plotPath, metrics.trainLoss(), metrics.evalLoss());
    say(`[siqvl] saved ${path} (${((performance.now() - t) / 1000).toFixed(1)} s)`);
    pausedMs += performance.now() - t;
  };

  // ---- the loop ----
  let evalResult: number | undefined;
  let genRows: GenRow[] | undefined;
  let killed = false;
  let stepsThisProcess = 0;
  model.train(true);
  try {
    if (globalStep === 0 && genSamples.length) genRows = await genEval(0);
    windowStart = performance.now();
    pausedMs = 0;
    while (globalStep < totalSteps) {
      const window: MicroBatch[] = [];
      for (let k = 0; k < a.gradient_accumulation_steps; k++) {
        const b = await loader.next();
        if (!b) throw new Error("internal: the training loader ended");
        window.push(microBatchOf(b.data));
        lastLoaderState = b.stateAfter;
      }
      const step = globalStep + 1;
      currentStep = step;
      await runner.run(step, window, schedule.lr());
      schedule.advance();
      globalStep = step;
      stepsThisProcess++;
      if (step % a.logging_steps === 0 || step === totalSteps) {
        await drain();
        logTrain();
      } else progress.update(step);
      if (stopReason) break;
      if (ds.eval && step % a.eval_steps === 0 && step !== totalSteps) {
        const l = await evalLoss(step);
        if (l !== undefined) {
          if (l < bestEval - 1e-4) {
            bestEval = l;
            evalsWithoutGain = 0;
          } else if (++evalsWithoutGain >= 10) {
            say(`[siqvl] early stopping: eval loss has not improved for 10 evaluations`);
            stopReason = "early-stopped";
          }
        }
      }
      if (genSamples.length && step % a.gen_steps === 0 && step !== totalSteps) {
        genRows = await genEval(step);
      }
      if (step % a.save_steps === 0 && step !== totalSteps) {
        await save(step);
        if (isBestAt(bestEval, metrics, step)) bestCheckpoint = lastCheckpoint;
      }
      if (stopReason) break;
      if (opts.killAfterSteps !== undefined && stepsThisProcess >= opts.killAfterSteps) {
        killed = true;
        break;
      }
    }
    await drain();
    if (sinceLog.length) logTrain();
    progress.done();

    let finalDir: string | null = null;
    const status = (killed ? "killed" : stopReason ?? "completed") as RunStatus;
    if (status === "stopped-nonfinite") {
      log(
        `[siqvl] stopping: ${consecutiveNonFinite} consecutive steps with non-finite loss or ` +
          `gradients. Last good checkpoint: ${lastCheckpoint ?? "(none saved yet)"}`,
      );
    } else if (status !== "killed") {
      evalResult = await evalLoss(globalStep);
      genRows = (await genEval(globalStep)) ?? genRows;
      const info: ExportInfo = {
        visionId: a.vision_model_name_or_path,
        textId: a.text_model_name_or_path,
        plan,
        globalStep,
        learningRate: a.learning_rate,
        batchSize: a.per_device_train_batch_size,
        gradientAccumulation: a.gradient_accumulation_steps,
        lora: a.use_lora
          ? {
            r: a.lora_r,
            alpha: a.lora_alpha,
            dropout: a.lora_dropout,
            targets: a.lora_target_modules,
          }
          : undefined,
        dataset: a.data_path,
        subsets: a.data_path === "shapes" || /\.jsonl?$/.test(a.data_path) ? undefined : a.sub_sets,
        trainLoss: lastTrainLoss,
        evalLoss: evalResult,
        exactMatch: genRows?.length
          ? genRows.filter((r) => r.exact).length / genRows.length
          : undefined,
        numTrainable,
        numTotal,
        precision: `${frozenStorageDtype(a)} storage of frozen weights; f32 math, activations, ` +
          "gradients, trainable weights and AdamW moments",
        genMaxNewTokens: a.gen_max_new_tokens,
        tokenizerFrom,
      };
      const hubId = a.push_to_hub
        ? a.hub_model_id ??
          runBaseName(a.vision_model_name_or_path, a.text_model_name_or_path, a.stage)
        : undefined;
      const exp = await writeFinalModel(model, processor, stageDir, info, {
        mergeLora: a.merge_lora,
        pytorchBin: a.save_pytorch_bin,
        hubId,
      });
      finalDir = exp.dir;
      await writeJsonAtomic(join(stageDir, "trainer_state.json"), {
        global_step: globalStep,
        max_steps: totalSteps,
        stage: a.stage,
        log_history: metrics.records,
        best_metric: isFinite(bestEval) ? bestEval : null,
        best_model_checkpoint: bestCheckpoint,
        stage1_dir: stage1Dir ?? null,
        args: a,
      });
      log(`[siqvl] final model: ${finalDir}${exp.merged ? ` (merged LoRA: ${exp.merged})` : ""}`);
      if (hubId) {
        const { pushToHub } = await import("./hub.ts");
        const url = await pushToHub(finalDir, hubId, { log, stage: a.stage });
        log(`[siqvl] pushed to ${url}`);
      }
    }
    await writeLossPlot(plotPath, metrics.trainLoss(), metrics.evalLoss());
    const seconds = (performance.now() - t0) / 1000;
    log(
      `[siqvl] stage ${a.stage} ${status} after ${globalStep} steps in ${
        formatDuration(seconds)
      }; ` +
        `plot ${plotPath}`,
    );
    const result: RunResult = {
      status,
      runDir,
      stageDir,
      finalDir,
      lastCheckpoint,
      globalStep,
      totalSteps,
      steps: allSteps,
      metrics: metrics.records,
      evalLoss: evalResult,
      genRows,
      plotPath,
      metricsPath,
      tensorboardPath: metrics.tensorboardPath,
      stage1Dir,
      seconds,
    };
    if (opts.keepModel) {
      result.model = model;
      result.processor = processor;
    }
    return result;
  } finally {
    progress.done();
    metrics.close();
    runner.dispose();
    optimizer.dispose();
    loader.close();
    pool.close();
    await ds.train.close?.();
    await ds.eval?.close?.();
    if (!opts.keepModel) model.dispose();
  }
}

// An eval after a save at the same step decides whether that checkpoint is the best so far.
function isBestAt(best: number, metrics: MetricsLog, step: number): boolean {
  const ev = metrics.records.filter((r) => r.type === "eval" && r.step === step);
  return ev.length > 0 && ev[ev.length - 1].loss === best;
}

function fmtNum(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  return Math.abs(x) >= 100 ? x.toFixed(1) : x.toPrecision(4);
}

function describePlan(p: StagePlan): string {
  return p.llm === "frozen"
    ? "vision + LLM frozen, projector trains"
    : p.llm === "lora"
    ? "vision frozen, projector + LoRA adapters train"
    : "vision frozen, projector + LLM train";
}

/** What trainer_state.json holds. */
export interface TrainerState {
  global_step: number;
  max_steps: number;
  stage: number;
  epoch?: number;
  optimizer_step?: number;
  log_history?: MetricRecord[];
  best_metric?: number | null;
  best_model_checkpoint?: string | null;
  evals_without_gain?: number;
  consecutive_nonfinite?: number;
  stage1_dir?: string | null;
  trainable?: string[];
  args: TrainArgs;
}

function checkResumeArgs(saved: TrainArgs, now: TrainArgs): void {
  const diffs: string[] = [];
  for (const k of RESUME_KEYS) {
    if (JSON.stringify(saved[k] ?? null) !== JSON.stringify(now[k] ?? null)) {
      diffs.push(`--${k} ${JSON.stringify(now[k])} (checkpoint: ${JSON.stringify(saved[k])})`);
    }
  }
  if (saved.max_steps !== now.max_steps) {
    diffs.push(`--max_steps ${now.max_steps} (checkpoint: ${saved.max_steps})`);
  }
  if (diffs.length) {
    throw new Error(
      `cannot resume: these flags differ from the checkpoint's run: ${diffs.join("; ")}`,
    );
  }
}

async function restoreCheckpoint(
  dir: string,
  state: TrainerState,
  parts: {
    trainable: [string, Tensor][];
    optimizer: AdamW;
    schedule: LrSchedule;
    loader: BatchLoader;
  },
): Promise<[number, LoaderState | null]> {
  const names = parts.trainable.map(([n]) => n);
  if (state.trainable && JSON.stringify(state.trainable) !== JSON.stringify(names)) {
    throw new Error(`${dir}: the checkpoint's trainable tensors differ from this run's`);
  }
  const w = await openTensors(join(dir, "trainable.safetensors"));
  try {
    for (const [n, t] of parts.trainable) {
      if (!w.has(n)) throw new Error(`${dir}: trainable.safetensors has no ${n}`);
      t.write(await w.readF32(n));
    }
  } finally {
    w.close();
  }
  const o = await openTensors(join(dir, "optimizer.safetensors"));
  try {
    const step = Number(o.metadata().step);
    const cache = new Map<string, Float32Array>();
    for (const k of o.keys()) cache.set(k, await o.readF32(k));
    parts.optimizer.importState(step, (n) => cache.get(n));
  } finally {
    o.close();
  }
  parts.schedule.restore(await readJson(join(dir, "scheduler.json")));
  const ls = await readJson<LoaderState | null>(join(dir, "data_state.json"));
  if (ls) await parts.loader.restore(ls);
  return [state.global_step, ls];
}

/** Build (stage 1) or load (stage 2) the model, its processor and storage dtypes. */
async function buildModel(
  gpu: Gpu,
  a: TrainArgs,
  plan: StagePlan,
  stage1Dir: string | undefined,
  log: (s: string) => void,
): Promise<{ model: SiqvlModel; processor: SiqvlProcessor; tokenizerFrom: string }> {
  let model: SiqvlModel;
  let processor: SiqvlProcessor;
  let tokenizerFrom: string;
  if (a.stage === 1) {
    const vision = await resolveModelSource(a.vision_model_name_or_path, log);
    const text = await resolveModelSource(a.text_model_name_or_path, log);
    const tokenizer = await TextTokenizer.fromDir(text);
    model = await buildSiqvl(gpu, {
      vision,
      text,
      projector: { factor: a.pixel_shuffle_factor },
      seed: a.seed,
      imageTokenId: tokenizer.requireId("<|image_pad|>"),
      visionStartTokenId: tokenizer.requireId("<|vision_start|>"),
      visionEndTokenId: tokenizer.requireId("<|vision_end|>"),
    });
    processor = new Processor({
      tokenizer,
      tokensPerImage: model.imageTokensPerImage,
      imageSize: model.config.vision.imageSize,
    });
    tokenizerFrom = text;
  } else {
    model = await loadSiqvl(gpu, stage1Dir!);
    if (model.projector.factor !== a.pixel_shuffle_factor) {
      model.dispose();
      throw new Error(
        `--pixel_shuffle_factor ${a.pixel_shuffle_factor} differs from the stage-1 model's ` +
          `factor ${model.projector.factor} (${stage1Dir})`,
      );
    }
    if (model.text.loraLinears().length) {
      model.dispose();
      throw new Error(`${stage1Dir}: the stage-1 model already carries LoRA adapters`);
    }
    processor = await Processor.fromPretrained(stage1Dir!, {
      tokensPerImage: model.imageTokensPerImage,
      imageSize: model.config.vision.imageSize,
    });
    tokenizerFrom = stage1Dir!;
    if (plan.llm === "lora") {
      model.text.attachLora(
        { r: a.lora_r, alpha: a.lora_alpha, dropout: a.lora_dropout },
        a.lora_target_modules,
      );
      model.text.initialize(gpu, a.seed);
    }
  }
  const conv = await prepareStorage(model, plan, frozenStorageDtype(a));
  if (conv.converted) {
    log(
      `[siqvl] converted ${conv.converted} weight tensors to their storage dtypes ` +
        `(${(conv.bytesBefore / 2 ** 20).toFixed(1)} → ${
          (conv.bytesAfter / 2 ** 20).toFixed(1)
        } MiB)`,
    );
  }
  return { model, processor, tokenizerFrom };
}

/** `n` fixed eval samples for generation (the original seeds Python's random with 42). */
async function fixedGenSamples(ds: Dataset, n: number, _seed: number): Promise<GenSample[]> {
  ds.rewind(0);
  const out: GenSample[] = [];
  for (let i = 0; i < n; i++) {
    const s: Sample | undefined = await ds.next();
    if (!s) break;
    out.push({ id: s.id, image: s.image, question: s.question, reference: s.answer });
  }
  ds.rewind(0);
  return out;
}
