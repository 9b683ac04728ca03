// `--profile` of cli/train.ts: a window of optimizer steps run under the profiler
// (src/gpu/profile.ts), its JSON written next to the run's metrics, its tables printed at the end.
//
// The window: --profile_steps optimizer steps from this process's second step (the first one
// compiles every shader, which would dominate), or from the first when the process runs a single
// step. It covers the data hand-off, forward, backward, optimizer and the metric readbacks of those
// steps; callbacks and saves between them run with the profile paused (pauseProfile).
//
// Parts: the model's (siqvlPart: inputs, vision, projector, llm.*, loss; backward:* and
// recompute:* for their gradients), "optimizer" (clipping + AdamW), "batch" (the stage's loss
// function outside the model: the pixel upload, a stage's own loss arithmetic) and "other" (the
// step runner: gradient accumulation over micro-batches, the statistics ring, its readback; and
// the tape's own sums where gradients meet outside a checkpoint recompute — with activations kept
// by --activation_budget_mb these are the residual stream's). GRPO's rollouts are the data
// hand-off of a step, so they are in the window (under the model's parts).
//
//   const w = new ProfileWindow(gpu, model, optimizer, lossModel, { steps, remaining, file });
//   await w.before(k);            // before this process's k-th step (1-based): may start it
//   await w.after(k, step, end);  // after it (and its readback): stops after the window
//   await w.paused(fn);           // fn unprofiled
//   await w.close();              // stops a profile still running (a run that ended early)

import { join } from "node:path";
import type { Gpu } from "../gpu/device.ts";
import { pauseProfile, type ProfileReport } from "../gpu/profile.ts";
import { describeProfile, ProfileSession } from "../gpu/profile_session.ts";
import type { SiqvlModel } from "../models/siqvl.ts";
import type { AdamW } from "./optimizer.ts";

/** What profile.json holds: the report plus the global steps it covers. */
export interface TrainProfile extends ProfileReport {
  /** Global optimizer steps profiled, in order. */
  steps: number[];
}

/** The profile file of a stage directory. */
export const profilePath = (stageDir: string): string => join(stageDir, "profile.json");

/** One profiled window of training steps (see the file header). */
export class ProfileWindow {
  /** This process's step index (1-based) the window starts at, and its last one. */
  readonly first: number;
  readonly last: number;
  report: TrainProfile | null = null;
  #steps: number[] = [];
  #session: ProfileSession | null = null;

  constructor(
    readonly gpu: Gpu,
    readonly model: SiqvlModel,
    readonly optimizer: AdamW,
    /** The stage's loss: its work outside the model's parts is charged to "batch". */
    readonly lossModel: object,
    readonly o: { steps: number; remaining: number; file: string },
  ) {
    this.first = o.remaining > 1 ? 2 : 1;
    this.last = this.first + o.steps - 1;
  }

  /** Before this process's k-th step: start the profile at the window's first step. */
  async before(k: number): Promise<void> {
    if (k !== this.first || this.#session) return;
    this.#session = await ProfileSession.start(this.gpu, this.model, [
      [this.optimizer, "update", "optimizer"],
      [this.lossModel, "lossOf", "batch"],
    ]);
  }

  /** After the k-th step (global step `step`); `end`: the loop ends after it. */
  async after(k: number, step: number, end: boolean): Promise<void> {
    if (!this.#session?.running) return;
    this.#steps.push(step);
    if (k >= this.last || end) await this.close();
  }

  /** Run `fn` with the profile paused (callbacks, saves). */
  paused<T>(fn: () => Promise<T>): Promise<T> {
    return this.#session?.running ? pauseProfile(this.gpu, fn) : fn();
  }

  /** Stop a running profile and write its JSON (idempotent). */
  async close(): Promise<void> {
    const r = await this.#session?.stop(this.o.file, { steps: this.#steps });
    if (r) this.report = r;
  }

  /** The printed form: a title line, then the tables of formatProfile. */
  describe(): string {
    const r = this.report;
    if (!r) return "[siqvl] profile: no step was profiled";
    const s = r.steps;
    const which = s.length === 1 ? `step ${s[0]}` : `steps ${s[0]}-${s[s.length - 1]}`;
    const note = this.first === 1 ? " (includes shader compilation: the only step)" : "";
    return describeProfile(`[siqvl] profile of ${which}${note}`, r, this.o.file);
  }
}
