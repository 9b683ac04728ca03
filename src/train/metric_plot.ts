// SVG plots of a run's stage-specific metrics (stage 4: rewards/*, logps/*, GRPO reward and KL)
// from its metrics.jsonl, next to the loss plot: one chart per group of metrics.

import { dirname, join } from "node:path";
import type { TrainerCallback, TrainerView } from "./callbacks.ts";
import { readMetrics } from "./metrics.ts";
import { lossPlotSvg, type Series } from "./plot.ts";

/** Charts a stage-4 run gets: file name → the train-record keys on it. */
export const STAGE4_PLOTS: Record<string, string[]> = {
  "rewards.svg": ["rewards/chosen", "rewards/rejected", "rewards/margins"],
  "accuracies.svg": ["rewards/accuracies"],
  "logps.svg": ["logps/chosen", "logps/rejected"],
  "reward.svg": ["reward", "reward_std"],
  "kl.svg": ["kl", "clip_ratio"],
};

/**
 * Write one SVG per chart whose keys appear in `<stageDir>/metrics.jsonl`; returns the files
 * written.
 */
export async function writeMetricPlots(
  stageDir: string,
  charts: Record<string, string[]> = STAGE4_PLOTS,
): Promise<string[]> {
  const train = readMetrics(join(stageDir, "metrics.jsonl")).filter((r) => r.type === "train");
  const out: string[] = [];
  for (const [file, keys] of Object.entries(charts)) {
    const series: Series[] = keys
      .map((k) => ({
        name: k,
        points: train.filter((r) => typeof r[k] === "number").map((r) =>
          [r.step, r[k] as number] as [number, number]
        ),
      }))
      .filter((s) => s.points.length > 0);
    if (!series.length) continue;
    const path = join(stageDir, file);
    const tmp = `${path}.tmp-${Deno.pid}`;
    await Deno.writeTextFile(tmp, lossPlotSvg(series, { title: keys.join(", "), yLabel: "" }));
    await Deno.rename(tmp, path);
    out.push(path);
  }
  return out;
}

/**
 * Keeps the metric plots of a run current: after every logging step and at the end (the loss
 * plot is the trainer's own). Stages without such metrics get no extra file.
 */
export class MetricPlotsCallback implements TrainerCallback {
  readonly name = "metric_plots";
  async onStep(t: TrainerView, step: number): Promise<void> {
    if (step % t.args.logging_steps === 0) await this.#write(t);
  }
  async onEnd(t: TrainerView): Promise<void> {
    await this.#write(t);
  }
  async #write(t: TrainerView): Promise<void> {
    if (t.metrics.path) await writeMetricPlots(dirname(t.metrics.path));
  }
}
