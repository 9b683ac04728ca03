// Run directories and checkpoints: names, atomic creation, rotation, discovery, and the training
// state saved into a checkpoint and restored from it (one mirrored pair, at the end).
//
//   {output_dir}/siq-vl_{vision}_{text}_stage{N}_{YYYYmmdd_HHMMSS}/stage{N}/      the stage dir
//       checkpoint-{step}/     trainable.safetensors, optimizer.safetensors, scheduler.json,
//                              data_state.json, rng_state.json, trainer_state.json
//       config.json, model.safetensors, …                                          the final model
//
// vision/text are the last path component of the model ids, lower-cased, "_" → "-" (so "_"
// separates the fields). A checkpoint is written into `.checkpoint-{step}.tmp-{pid}` and renamed
// to `checkpoint-{step}` only when complete: a crash mid-save leaves a temp dir (removed on the
// next start), never a half-written `checkpoint-*`.

import { basename, join } from "node:path";
import type { JsonValue } from "../data/datasets/types.ts";
import { isDir, isFile, pathKind, readJson, writeJson } from "../io/file.ts";
import { openTensors } from "../io/reader.ts";
import { parseSafetensorsHeader, writeSafetensors } from "../io/safetensors.ts";
import { nonFiniteCount } from "../tensor/ops/finite.ts";
import { tensorToSafetensors } from "../models/tensor_bytes.ts";
import { nextDropoutStep } from "../nn/dropout.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { RESUME_KEYS, type TrainArgs } from "./args.ts";
import type { MetricRecord } from "./metrics.ts";
import type { AdamW } from "./optimizer.ts";
import type { LrSchedule } from "./schedule.ts";

/** The short name of a model id or path: last component, lower-cased, "_" → "-". */
export function shortModelName(idOrPath: string): string {
  const parts = idOrPath.replace(/[\\/]+$/, "").split(/[\\/]/);
  const last = parts[parts.length - 1] || idOrPath;
  return last.toLowerCase().replace(/_/g, "-");
}

/** `YYYYmmdd_HHMMSS` in local time. */
export function timestamp(d = new Date()): string {
  const p = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}_` +
    `${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
}

/** `siq-vl_{vision}_{text}_stage{N}` (also the default hub repo name). */
export function runBaseName(vision: string, text: string, stage: number): string {
  return `siq-vl_${shortModelName(vision)}_${shortModelName(text)}_stage${stage}`;
}

/** `siq-vl_{vision}_{text}_stage{N}_{YYYYmmdd_HHMMSS}`. */
export function runDirName(vision: string, text: string, stage: number, d = new Date()): string {
  return `${runBaseName(vision, text, stage)}_${timestamp(d)}`;
}

/** The stage directory of a run directory. */
export function stageDir(runDir: string, stage: number): string {
  return join(runDir, `stage${stage}`);
}

/** Checkpoint dirs of a stage dir, oldest (lowest step) first. */
export function listCheckpoints(dir: string): { step: number; path: string }[] {
  const out: { step: number; path: string }[] = [];
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(dir)];
  } catch {
    return out;
  }
  for (const e of entries) {
    const m = /^checkpoint-(\d+)$/.exec(e.name);
    if (m && e.isDirectory && isFile(join(dir, e.name, "trainer_state.json"))) {
      out.push({ step: Number(m[1]), path: join(dir, e.name) });
    }
  }
  return out.sort((a, b) => a.step - b.step);
}

/** Whether process `pid` is alive (Linux: /proc; elsewhere every other pid counts as gone). */
export function processAlive(pid: number): boolean {
  if (pid === Deno.pid) return true;
  return Deno.build.os === "linux" ? pathKind(`/proc/${pid}`) === "dir" : false;
}

/** Remove temp dirs left by an interrupted save — only those whose writing process is gone. */
export function removeStaleTemps(dir: string): string[] {
  const removed: string[] = [];
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(dir)];
  } catch {
    return removed;
  }
  for (const e of entries) {
    const m = /^\.checkpoint-\d+\.(?:tmp|old)-(\d+)$/.exec(e.name) ??
      /^\.(?:final|merged)\.tmp-(\d+)$/.exec(e.name);
    if (m && !processAlive(Number(m[1]))) {
      Deno.removeSync(join(dir, e.name), { recursive: true });
      removed.push(e.name);
    }
  }
  return removed;
}

/** The lock file of a stage directory while a process trains in it. */
export const LOCK_FILE = ".siqvl-train.lock";

/**
 * Lock `dir` for this process: a second trainer (or a resume) on the same run refuses, naming
 * the PID that holds it; a lock left by a process that is gone is taken over. Returns the
 * release function.
 */
export function lockRunDir(dir: string): () => void {
  const path = join(dir, LOCK_FILE);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      Deno.writeTextFileSync(path, `${Deno.pid}\n`, { createNew: true });
      return () => {
        try {
          if (Deno.readTextFileSync(path).trim() === String(Deno.pid)) Deno.removeSync(path);
        } catch {
          // already gone
        }
      };
    } catch (e) {
      if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
      const pid = Number(Deno.readTextFileSync(path).trim());
      if (Number.isInteger(pid) && pid > 0 && processAlive(pid)) {
        throw new Error(
          `run directory ${dir} is in use: process ${pid} is training in it (${path}); wait ` +
            "for it to finish or stop it",
        );
      }
      Deno.removeSync(path); // left by a process that is gone
    }
  }
  throw new Error(`cannot lock ${dir}`);
}

/**
 * Why a checkpoint directory cannot be resumed from (unreadable trainer state, missing or
 * truncated weight files), or null when it looks complete. Reads only headers.
 */
export function checkpointProblem(dir: string): string | null {
  try {
    JSON.parse(Deno.readTextFileSync(join(dir, "trainer_state.json")));
  } catch (e) {
    return `trainer_state.json: ${(e as Error).message}`;
  }
  for (const f of ["trainable.safetensors", "optimizer.safetensors"]) {
    const p = join(dir, f);
    try {
      const file = Deno.openSync(p, { read: true });
      try {
        const size = file.statSync().size;
        const head = new Uint8Array(8);
        if (size < 8 || file.readSync(head) !== 8) return `${f}: truncated (${size} bytes)`;
        const n = Number(new DataView(head.buffer).getBigUint64(0, true));
        if (n > size - 8) return `${f}: header length ${n} is past the end (${size} bytes)`;
        const json = new Uint8Array(n);
        let got = 0;
        while (got < n) {
          const r = file.readSync(json.subarray(got));
          if (!r) break;
          got += r;
        }
        parseSafetensorsHeader(new TextDecoder().decode(json), n, size, p);
      } finally {
        file.close();
      }
    } catch (e) {
      return `${f}: ${(e as Error).message}`;
    }
  }
  for (const f of ["scheduler.json", "data_state.json", "rng_state.json"]) {
    try {
      JSON.parse(Deno.readTextFileSync(join(dir, f)));
    } catch (e) {
      return `${f}: ${(e as Error).message}`;
    }
  }
  return null;
}

/** The newest checkpoint of `stageDir` that is intact; damaged newer ones go to `skipped`. */
function newestGood(stageDir: string, skipped: string[]): string | undefined {
  const cps = listCheckpoints(stageDir);
  for (let i = cps.length - 1; i >= 0; i--) {
    const why = checkpointProblem(cps[i].path);
    if (!why) return cps[i].path;
    skipped.push(`${cps[i].path} is damaged (${why}); skipped`);
  }
  return undefined;
}

/**
 * Create `checkpoint-{step}` atomically: `write(tmpDir)` fills a temp dir which is then renamed.
 * An existing checkpoint of the same step is replaced only after the new one is complete.
 */
export async function saveCheckpointDir(
  dir: string,
  step: number,
  write: (tmpDir: string) => Promise<void>,
): Promise<string> {
  await Deno.mkdir(dir, { recursive: true });
  const final = join(dir, `checkpoint-${step}`);
  const tmp = join(dir, `.checkpoint-${step}.tmp-${Deno.pid}`);
  await Deno.remove(tmp, { recursive: true }).catch(() => {});
  await Deno.mkdir(tmp);
  try {
    await write(tmp);
  } catch (e) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw e;
  }
  if (isDir(final)) {
    const old = join(dir, `.checkpoint-${step}.old-${Deno.pid}`);
    await Deno.rename(final, old);
    await Deno.rename(tmp, final);
    await Deno.remove(old, { recursive: true });
  } else {
    await Deno.rename(tmp, final);
  }
  return final;
}

/**
 * Delete the oldest checkpoints beyond `limit` (0 = keep all). The newest checkpoint and
 * `protect` (the best one) are never deleted, so up to limit + 1 can remain (as HF's Trainer).
 */
export function rotateCheckpoints(dir: string, limit: number, protect?: string): string[] {
  if (limit <= 0) return [];
  const all = listCheckpoints(dir);
  const removed: string[] = [];
  const newest = all[all.length - 1]?.path;
  let excess = all.length - limit;
  for (const c of all) {
    if (excess <= 0) break;
    if (c.path === newest || (protect && c.path === protect)) continue;
    Deno.removeSync(c.path, { recursive: true });
    removed.push(c.path);
    excess--;
  }
  return removed;
}

/** A run directory found under an output dir. */
export interface FoundRun {
  runDir: string;
  stageDir: string;
  stamp: string;
}

/**
 * Runs `siq-vl_{vision}_{text}_stage{N}_*` under `outputDir`, newest first, whose stage dir
 * satisfies `accept` (e.g. holds a final model, or a checkpoint).
 */
export function findRuns(
  outputDir: string,
  vision: string,
  text: string,
  stage: number,
  accept: (stageDir: string) => boolean = () => true,
): FoundRun[] {
  const prefix = runBaseName(vision, text, stage) + "_";
  const out: FoundRun[] = [];
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(outputDir)];
  } catch {
    return out;
  }
  for (const e of entries) {
    if (!e.isDirectory || !e.name.startsWith(prefix)) continue;
    const stamp = e.name.slice(prefix.length);
    if (!/^\d{8}_\d{6}(-\d+)?$/.test(stamp)) continue;
    const runDir = join(outputDir, e.name);
    const sd = stageDir(runDir, stage);
    if (isDir(sd) && accept(sd)) out.push({ runDir, stageDir: sd, stamp });
  }
  return out.sort((a, b) => (a.stamp < b.stamp ? 1 : a.stamp > b.stamp ? -1 : 0));
}

/** Whether a directory holds a finished model (config.json + weights). */
export function hasFinalModel(dir: string): boolean {
  return isFile(join(dir, "config.json")) &&
    (isFile(join(dir, "model.safetensors")) || isFile(join(dir, "adapter_model.safetensors")));
}

/**
 * Resolve --resume_from_checkpoint: a `checkpoint-N` dir, a stage or run dir (its newest
 * checkpoint), or "latest" (newest checkpoint of the newest matching run under outputDir).
 */
export function resolveResume(
  spec: string,
  outputDir: string,
  vision: string,
  text: string,
  stage: number,
  runName?: string,
): { checkpoint: string; stageDir: string; runDir: string; skipped: string[] } {
  const skipped: string[] = [];
  if (spec === "latest" || spec === "true") {
    const runs = findRuns(outputDir, vision, text, stage, (sd) => listCheckpoints(sd).length > 0);
    if (runName) {
      // --run_name dirs (and their "-k" siblings), newest checkpoint first.
      const named = [...(pathKind(outputDir) === "dir" ? Deno.readDirSync(outputDir) : [])]
        .filter((e) => e.isDirectory && (e.name === runName || e.name.startsWith(`${runName}-`)))
        .map((e) => ({ runDir: join(outputDir, e.name), stamp: "" }))
        .map((r) => ({ ...r, stageDir: stageDir(r.runDir, stage) }))
        .filter((r) => listCheckpoints(r.stageDir).length > 0)
        .sort((x, y) =>
          Deno.statSync(y.stageDir).mtime!.getTime() -
          Deno.statSync(x.stageDir).mtime!.getTime()
        );
      runs.unshift(...named);
    }
    for (const run of runs) {
      const checkpoint = newestGood(run.stageDir, skipped);
      if (checkpoint) return { checkpoint, stageDir: run.stageDir, runDir: run.runDir, skipped };
    }
    throw new Error(
      `--resume_from_checkpoint ${spec}: no ${
        runName ?? runBaseName(vision, text, stage) + "_*"
      } ` +
        `run with a usable checkpoint under ${outputDir}` +
        (skipped.length ? ` (${skipped.join("; ")})` : ""),
    );
  }
  if (!isDir(spec)) throw new Error(`--resume_from_checkpoint: ${spec} is not a directory`);
  const name = basename(spec.replace(/[\\/]+$/, ""));
  if (/^checkpoint-\d+$/.test(name)) {
    if (!isFile(join(spec, "trainer_state.json"))) {
      throw new Error(`--resume_from_checkpoint: ${spec} has no trainer_state.json`);
    }
    const sd = join(spec, "..");
    return { checkpoint: spec, stageDir: sd, runDir: join(sd, ".."), skipped };
  }
  const candidates = [spec, stageDir(spec, stage)];
  for (const sd of candidates) {
    const checkpoint = newestGood(sd, skipped);
    if (checkpoint) return { checkpoint, stageDir: sd, runDir: join(sd, ".."), skipped };
  }
  throw new Error(`--resume_from_checkpoint: no checkpoint-* directory in ${spec}`);
}

// ---- the training state: saved and restored as a mirrored pair ----
//
//   checkpoint-{step}/trainable.safetensors   trainable tensors by name (f32)
//                     optimizer.safetensors   AdamW moments (metadata: step)
//                     scheduler.json          the learning-rate schedule's position
//                     data_state.json         the data source's position after the last batch
//                     rng_state.json          seed + dropout forwards consumed
//                     trainer_state.json      step, log history, callbacks' state, args

/** What trainer_state.json holds (in checkpoints and, without the resume fields, in the stage dir). */
export interface TrainerState {
  global_step: number;
  max_steps: number;
  stage: number;
  optimizer_step?: number;
  log_history?: MetricRecord[];
  /** State of the callbacks that keep some (eval loss: best metric, early stopping). */
  callbacks?: Record<string, JsonValue>;
  best_model_checkpoint?: string | null;
  consecutive_nonfinite?: number;
  /** The previous stage's result this run started from. */
  from_dir?: string | null;
  trainable?: string[];
  args: TrainArgs;
}

/** Everything a checkpoint saves and restores. */
export interface TrainingParts {
  trainable: [string, Tensor][];
  optimizer: AdamW;
  schedule: LrSchedule;
  data: { state(): JsonValue; restore(s: JsonValue): Promise<void> };
  /** Forwards that drew dropout masks so far (replayed on restore). */
  dropoutForwards: number;
}

/** Write trainer_state.json into `dir`. */
export function writeTrainerState(dir: string, state: TrainerState): Promise<void> {
  return writeJson(join(dir, "trainer_state.json"), state);
}

/** Read a checkpoint's trainer_state.json. */
export function readTrainerState(dir: string): Promise<TrainerState> {
  return readJson<TrainerState>(join(dir, "trainer_state.json"));
}

/**
 * Save `checkpoint-{step}` atomically under `stageDir`; returns its path. `modelFiles` writes
 * the loadable model (config.json + weights + processor files) into the same directory, so a
 * checkpoint opens like a final model.
 */
export async function saveTrainingCheckpoint(
  stageDir: string,
  parts: TrainingParts,
  state: TrainerState,
  modelFiles?: (dir: string) => Promise<void>,
): Promise<string> {
  const step = state.global_step;
  await refuseNonFinite(parts, `refusing to save checkpoint-${step} in ${stageDir}`);
  return await saveCheckpointDir(stageDir, step, async (dir) => {
    await writeSafetensors(
      join(dir, "trainable.safetensors"),
      Object.fromEntries(parts.trainable.map(([n, p]) => [n, tensorToSafetensors(p)])),
      { format: "pt", step: String(step) },
    );
    const os = await parts.optimizer.exportState();
    await writeSafetensors(
      join(dir, "optimizer.safetensors"),
      Object.fromEntries(
        [...os.tensors].map(([n, v]) => [n, { dtype: "F32" as const, shape: [v.length], data: v }]),
      ),
      { format: "pt", step: String(os.step) },
    );
    await writeJson(join(dir, "scheduler.json"), parts.schedule.state());
    await writeJson(join(dir, "data_state.json"), parts.data.state());
    await writeJson(join(dir, "rng_state.json"), {
      seed: state.args.seed,
      dropout_forwards: parts.dropoutForwards,
    });
    await writeTrainerState(dir, { ...state, trainable: parts.trainable.map(([n]) => n) });
    await modelFiles?.(dir);
  });
}

/** Throws `what` when the trainable weights hold NaN/Inf (checked on the GPU, one readback). */
export async function refuseNonFinite(
  parts: Pick<TrainingParts, "trainable">,
  what: string,
): Promise<void> {
  const bad = await nonFiniteCount(parts.trainable.map(([, t]) => t));
  if (bad > 0) {
    throw new Error(
      `${what}: the trainable weights hold ${bad} non-finite (NaN/Inf) values — the run ` +
        "diverged (lower --learning_rate, keep --max_grad_norm) or the weights are damaged",
    );
  }
}

/**
 * Restore what {@link saveTrainingCheckpoint} wrote into `parts` (weights, moments, schedule,
 * data position, dropout stream); returns the checkpoint's trainer state.
 */
export async function loadTrainingCheckpoint(
  dir: string,
  parts: TrainingParts,
): Promise<TrainerState> {
  const state = await readTrainerState(dir);
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
  await refuseNonFinite(parts, `cannot resume from ${dir}`);
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
  const dsPath = join(dir, "data_state.json");
  const ds = await readJson<JsonValue>(dsPath, "state");
  try {
    if (ds) await parts.data.restore(ds);
  } catch (e) {
    throw new Error(`${dsPath}: ${(e as Error).message}`);
  }
  const rng = await readJson<{ dropout_forwards?: number }>(join(dir, "rng_state.json"));
  for (let i = 0; i < (rng.dropout_forwards ?? 0); i++) nextDropoutStep();
  return state;
}

/** Flags that differ between a checkpoint's run and this one (empty = may resume). */
export function resumeConflicts(saved: TrainArgs, now: TrainArgs): string[] {
  const diffs: string[] = [];
  for (const k of RESUME_KEYS) {
    if (JSON.stringify(saved[k] ?? null) !== JSON.stringify(now[k] ?? null)) {
      diffs.push(`--${k} ${JSON.stringify(now[k])} (checkpoint: ${JSON.stringify(saved[k])})`);
    }
  }
  return diffs;
}
