// The trainer's view of finished steps: reads the step statistics back (one readback per drain),
// counts non-finite steps (whose updates the GPU skipped), writes a "train" metrics record per
// logging window with throughput measured without the time spent in callbacks and saves.

import type { Gpu } from "../gpu/device.ts";
import type { MetricsLog } from "./metrics.ts";
import type { AdamW } from "./optimizer.ts";
import type { Progress } from "./progress.ts";
import type { StepBatch, StepRunner, StepStats } from "./step.ts";

function fmtNum(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  return Math.abs(x) >= 100 ? x.toFixed(1) : x.toPrecision(4);
}

/** Options of {@link StepLog}. */
export interface StepLogOptions {
  gpu: Gpu;
  runner: StepRunner<StepBatch>;
  optimizer: AdamW;
  metrics: MetricsLog;
  progress: Progress;
  /** Samples per optimizer step and per pass (for the epoch column). */
  samplesPerStep: number;
  samplesPerPass: number;
  /** Stop after this many consecutive non-finite steps. */
  maxNonFinite: number;
  /** Non-finite steps in a row carried over from a resumed checkpoint. */
  consecutiveNonFinite?: number;
  /** Samples skipped so far by reason (unreadable image, too long, …), for records and progress. */
  skipCounts?: () => Record<string, number>;
}

/** `reason n, reason n` of non-zero skip counts ("" when none). */
export function formatSkips(counts: Record<string, number>): string {
  return Object.entries(counts).filter(([, n]) => n > 0).map(([r, n]) => `${r} ${n}`).join(", ");
}

/** Step statistics, non-finite accounting and train records. */
export class StepLog {
  /** Every step read back in this process. */
  readonly steps: StepStats[] = [];
  consecutiveNonFinite: number;
  lastTrainLoss: number | undefined;
  #since: StepStats[] = [];
  #windowStart = performance.now();
  #pausedMs = 0;

  constructor(readonly o: StepLogOptions) {
    this.consecutiveNonFinite = o.consecutiveNonFinite ?? 0;
  }

  /** Whether the non-finite streak has reached the limit. */
  get tooManyNonFinite(): boolean {
    return this.consecutiveNonFinite >= this.o.maxNonFinite;
  }

  /** Steps read back but not yet in a train record. */
  get pending(): number {
    return this.#since.length;
  }

  /** Restart the throughput window (before the first step). */
  resetWindow(): void {
    this.#windowStart = performance.now();
    this.#pausedMs = 0;
  }

  /** Run `f`, not counting its time as training. */
  async paused(f: () => Promise<void>): Promise<void> {
    const t = performance.now();
    try {
      await f();
    } finally {
      this.#pausedMs += performance.now() - t;
    }
  }

  /** Read back the steps run since the last drain; account for non-finite ones. */
  async drain(): Promise<void> {
    const { metrics, progress, optimizer } = this.o;
    for (const s of await this.o.runner.drain()) {
      this.steps.push(s);
      this.#since.push(s);
      if (s.finite) {
        this.consecutiveNonFinite = 0;
        continue;
      }
      this.consecutiveNonFinite++;
      // The GPU left weights and moments untouched: do not count the update.
      optimizer.step = Math.max(0, optimizer.step - 1);
      const msg = `step ${s.step}: non-finite loss or gradients (loss ${s.loss}, grad norm ` +
        `${s.gradNorm}); update skipped`;
      progress.log(`[siqvl] ${msg}`);
      metrics.log({ type: "event", step: s.step, event: "skipped_step", message: msg });
    }
  }

  /** One "train" record over the steps drained since the last one. */
  record(): void {
    const st = this.#since;
    if (!st.length) return;
    const now = performance.now();
    const sec = Math.max(1, now - this.#windowStart - this.#pausedMs) / 1000;
    const fin = st.filter((s) => s.finite);
    const last = st[st.length - 1];
    const mean = (f: (s: StepStats) => number) =>
      fin.length ? fin.reduce((s, x) => s + f(x), 0) / fin.length : NaN;
    const loss = mean((s) => s.loss);
    const mem = this.o.gpu.memory();
    const skipped = this.o.skipCounts?.() ?? {};
    const skippedTotal = Object.values(skipped).reduce((a, b) => a + b, 0);
    const rec = this.o.metrics.log({
      type: "train",
      step: last.step,
      epoch: Number((last.step * this.o.samplesPerStep / this.o.samplesPerPass).toFixed(4)) || 0,
      loss,
      lr: last.lr,
      grad_norm: last.gradNorm,
      ...Object.fromEntries(this.o.runner.statNames.map((k) => [k, mean((s) => s.stats[k])])),
      tokens_per_sec: st.reduce((s, x) => s + x.tokens, 0) / sec,
      samples_per_sec: st.reduce((s, x) => s + x.samples, 0) / sec,
      step_time_sec: sec / st.length,
      gpu_live_bytes: mem.live,
      gpu_peak_bytes: mem.peak,
      skipped_steps: st.length - fin.length,
      skipped_samples: skipped,
    });
    this.lastTrainLoss = Number.isFinite(loss) ? loss : this.lastTrainLoss;
    this.o.progress.update(
      last.step,
      `loss ${fmtNum(loss)} lr ${last.lr.toExponential(2)} grad ${fmtNum(last.gradNorm)} ` +
        `${Math.round(rec.tokens_per_sec as number)} tok/s` +
        (skippedTotal ? ` skipped ${skippedTotal}` : ""),
    );
    this.#since = [];
    this.#windowStart = now;
    this.#pausedMs = 0;
  }
}
