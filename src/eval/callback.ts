// Benchmark tasks during training (`cli/train.ts --eval_tasks shapes,... --eval_limit N`): the
// trainer callback runs each task on the first N questions at step 0, every gen_steps and at the
// end, logs `eval` records whose keys are "<task>/<metric>" — in TensorBoard the scalars
// eval/<task>/<metric> — draws them into eval.svg beside metrics.jsonl, and hands the last
// values to the model card of the final export.

import { dirname, join } from "node:path";
import type { JsonValue } from "../data/datasets/types.ts";
import { ImagePool } from "../data/image_pool.ts";
import type { TrainerCallback, TrainerView } from "../train/callbacks.ts";
import type { ExportInfo } from "../train/export.ts";
import { lossPlotSvg, type Series } from "../train/plot.ts";
import { runTask } from "./runner.ts";
import { type LoadedTask, loadTask } from "./task.ts";

/** Runs benchmark tasks on the model being trained. */
export class EvalTasksCallback implements TrainerCallback {
  readonly name = "eval_tasks";
  readonly #pool = new ImagePool({ workers: 0 });
  /** (step, value) per "<task>/<metric>". */
  #history = new Map<string, [number, number][]>();

  constructor(readonly tasks: LoadedTask[], readonly limit: number, readonly batchSize = 8) {}

  /** Tasks by name or task-file path (all validated before training starts). */
  static async create(
    names: string[],
    limit: number,
    batchSize?: number,
  ): Promise<EvalTasksCallback> {
    const tasks: LoadedTask[] = [];
    for (const n of names) tasks.push(await loadTask(n));
    return new EvalTasksCallback(tasks, limit, batchSize);
  }

  async run(t: TrainerView, step: number): Promise<void> {
    const rec: Record<string, number> = {};
    for (const task of this.tasks) {
      const { result } = await runTask({ model: t.model, processor: t.processor }, task, {
        limit: this.limit,
        batchSize: this.batchSize,
        pool: this.#pool,
      });
      const parts: string[] = [];
      for (const [k, v] of Object.entries(result.metrics)) {
        const key = `${task.spec.task}/${k}`;
        rec[key] = v;
        const h = this.#history.get(key) ?? [];
        h.push([step, v]);
        this.#history.set(key, h);
        if (!k.includes("/")) parts.push(`${k} ${v.toFixed(4)}`);
      }
      t.say(
        `[eval step ${step}] ${task.spec.task}: ${parts.join(", ")} (${result.n} questions, ` +
          `${result.seconds.toFixed(1)} s)`,
      );
    }
    t.metrics.log({ type: "eval", step, ...rec });
    if (t.metrics.path) await this.#plot(join(dirname(t.metrics.path), "eval.svg"));
  }

  async #plot(path: string): Promise<void> {
    const series: Series[] = [...this.#history].filter(([k]) => k.split("/").length === 2)
      .map(([name, points]) => ({ name, points, markers: true }));
    await Deno.writeTextFile(
      path,
      lossPlotSvg(series, { title: "benchmark tasks", yLabel: "score" }),
    );
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

  /** The latest value of every "<task>/<metric>". */
  latest(): Record<string, number> {
    return Object.fromEntries([...this.#history].map(([k, h]) => [k, h[h.length - 1][1]]));
  }

  exportInfo(): Partial<ExportInfo> {
    return this.#history.size ? { benchmarks: this.latest() } : {};
  }

  state(): JsonValue {
    return Object.fromEntries([...this.#history].map(([k, h]) => [k, h]));
  }

  restore(state: JsonValue): void {
    if (!state || typeof state !== "object" || Array.isArray(state)) return;
    this.#history = new Map(Object.entries(state as Record<string, [number, number][]>));
  }
}
