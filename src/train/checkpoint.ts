// Run directories and checkpoint directories: names, atomic creation, rotation, discovery.
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

function isDir(p: string): boolean {
  try {
    return Deno.statSync(p).isDirectory;
  } catch {
    return false;
  }
}

function isFile(p: string): boolean {
  try {
    return Deno.statSync(p).isFile;
  } catch {
    return false;
  }
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

/** Remove temp dirs left by an interrupted save. */
export function removeStaleTemps(dir: string): string[] {
  const removed: string[] = [];
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(dir)];
  } catch {
    return removed;
  }
  for (const e of entries) {
    if (/^\.checkpoint-\d+\.tmp-\d+$/.test(e.name) || /^\.final\.tmp-\d+$/.test(e.name)) {
      Deno.removeSync(join(dir, e.name), { recursive: true });
      removed.push(e.name);
    }
  }
  return removed;
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
): { checkpoint: string; stageDir: string; runDir: string } {
  if (spec === "latest" || spec === "true") {
    const runs = findRuns(outputDir, vision, text, stage, (sd) => listCheckpoints(sd).length > 0);
    if (!runs.length) {
      throw new Error(
        `--resume_from_checkpoint ${spec}: no ${runBaseName(vision, text, stage)}_* run with a ` +
          `checkpoint under ${outputDir}`,
      );
    }
    const cps = listCheckpoints(runs[0].stageDir);
    return {
      checkpoint: cps[cps.length - 1].path,
      stageDir: runs[0].stageDir,
      runDir: runs[0].runDir,
    };
  }
  if (!isDir(spec)) throw new Error(`--resume_from_checkpoint: ${spec} is not a directory`);
  const name = basename(spec.replace(/[\\/]+$/, ""));
  if (/^checkpoint-\d+$/.test(name)) {
    if (!isFile(join(spec, "trainer_state.json"))) {
      throw new Error(`--resume_from_checkpoint: ${spec} has no trainer_state.json`);
    }
    const sd = join(spec, "..");
    return { checkpoint: spec, stageDir: sd, runDir: join(sd, "..") };
  }
  const candidates = [spec, stageDir(spec, stage)];
  for (const sd of candidates) {
    const cps = listCheckpoints(sd);
    if (cps.length) {
      return { checkpoint: cps[cps.length - 1].path, stageDir: sd, runDir: join(sd, "..") };
    }
  }
  throw new Error(`--resume_from_checkpoint: no checkpoint-* directory in ${spec}`);
}

/** Write a JSON file atomically (temp + rename). */
export async function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  const tmp = `${path}.tmp-${Deno.pid}`;
  await Deno.writeTextFile(tmp, JSON.stringify(value, null, 2) + "\n");
  await Deno.rename(tmp, path);
}
