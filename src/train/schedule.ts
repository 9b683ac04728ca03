// Learning-rate schedules, as multipliers of the base learning rate per optimizer step.
//
// The multiplier for optimizer step k (0-based: the k-th update) follows the Hugging Face
// schedulers the original trainer used (the scheduler is stepped after each update, so update k
// runs with factor(k)):
//   cosine:   k < W: k / W;  else 0.5·(1 + cos(π · (k − W) / max(1, N − W)))
//   linear:   k < W: k / W;  else max(0, (N − k) / max(1, N − W))
//   constant: 1 (a warmup, when asked for, ramps as above and then stays at 1)
// where N = total optimizer steps and W = ceil(N · warmup_ratio) (or warmup_steps when given).

/** Names accepted by `--lr_scheduler_type`. */
export const SCHEDULE_TYPES = ["cosine", "linear", "constant"] as const;
/** A schedule kind. */
export type ScheduleType = typeof SCHEDULE_TYPES[number];

/** Everything that defines a schedule (stored in checkpoints to check a resume matches). */
export interface ScheduleConfig {
  type: ScheduleType;
  baseLr: number;
  totalSteps: number;
  warmupSteps: number;
}

/** Warmup steps for a ratio, as HF computes them: ceil(total · ratio). */
export function warmupStepsFor(totalSteps: number, ratio: number): number {
  if (!(ratio >= 0 && ratio <= 1)) throw new Error(`warmup ratio ${ratio} is not in [0, 1]`);
  return Math.ceil(totalSteps * ratio);
}

/** A learning-rate schedule with its position (the number of updates done). */
export class LrSchedule {
  readonly config: ScheduleConfig;
  /** Updates done so far; `lr()` is the rate for the next one. */
  step = 0;

  constructor(config: ScheduleConfig) {
    if (!SCHEDULE_TYPES.includes(config.type)) {
      throw new Error(
        `unknown lr schedule "${config.type}" (known: ${SCHEDULE_TYPES.join(", ")})`,
      );
    }
    if (!(config.baseLr >= 0) || !Number.isFinite(config.baseLr)) {
      throw new Error(`learning rate ${config.baseLr} must be a finite number >= 0`);
    }
    if (!Number.isInteger(config.totalSteps) || config.totalSteps < 1) {
      throw new Error(`schedule needs total steps >= 1, got ${config.totalSteps}`);
    }
    if (!Number.isInteger(config.warmupSteps) || config.warmupSteps < 0) {
      throw new Error(`warmup steps must be an integer >= 0, got ${config.warmupSteps}`);
    }
    this.config = { ...config };
  }

  /** The multiplier of the base rate for update `k` (0-based). */
  factor(k: number): number {
    const { type, totalSteps: n, warmupSteps: w } = this.config;
    if (k < w) return k / Math.max(1, w);
    switch (type) {
      case "constant":
        return 1;
      case "linear":
        return Math.max(0, (n - k) / Math.max(1, n - w));
      case "cosine": {
        const progress = (k - w) / Math.max(1, n - w);
        return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * progress)));
      }
    }
  }

  /** The learning rate of update `k` (default: the next one). */
  lr(k = this.step): number {
    return this.config.baseLr * this.factor(k);
  }

  /** Advance past one update. */
  advance(): void {
    this.step++;
  }

  /** Serializable state (config + position). */
  state(): ScheduleConfig & { step: number } {
    return { ...this.config, step: this.step };
  }

  /** Restore the position from `state()`; the configuration must match. */
  restore(s: ScheduleConfig & { step: number }): void {
    const c = this.config;
    if (
      s.type !== c.type || s.totalSteps !== c.totalSteps || s.warmupSteps !== c.warmupSteps ||
      Math.abs(s.baseLr - c.baseLr) > 1e-12 * Math.max(1, c.baseLr)
    ) {
      throw new Error(
        `scheduler state in the checkpoint (${s.type}, lr ${s.baseLr}, ${s.totalSteps} steps, ` +
          `warmup ${s.warmupSteps}) does not match this run (${c.type}, lr ${c.baseLr}, ` +
          `${c.totalSteps} steps, warmup ${c.warmupSteps}); resume with the same flags`,
      );
    }
    if (!Number.isInteger(s.step) || s.step < 0) throw new Error(`bad scheduler step ${s.step}`);
    this.step = s.step;
  }
}
