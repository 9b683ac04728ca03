// The metrics log: one JSON object per line in `metrics.jsonl` (train records every
// logging_steps, eval records, generation-eval records, events such as skipped steps), mirrored
// in memory for the loss plot and trainer_state.json, and optionally to TensorBoard.
//
// Every record has `type` ("train" | "eval" | "gen" | "event"), `step` (optimizer step) and
// `time` (ISO-8601); train records add loss, lr, grad_norm, tokens_per_sec, samples_per_sec,
// step_time_sec, gpu_live_bytes, gpu_peak_bytes (and more as given).

import { TensorBoardWriter } from "./tensorboard.ts";

/** One metrics record. */
export interface MetricRecord {
  type: "train" | "eval" | "gen" | "event";
  step: number;
  [key: string]: unknown;
}

/** Appends records to a JSONL file; keeps them in memory for plots and trainer state. */
export class MetricsLog {
  readonly path: string | null;
  readonly records: MetricRecord[] = [];
  #tb: TensorBoardWriter | null = null;
  #file: Deno.FsFile | null = null;

  /** `path` null keeps records in memory only. `tensorboardDir` adds an event file. */
  constructor(
    path: string | null,
    opts: { tensorboardDir?: string; history?: MetricRecord[] } = {},
  ) {
    this.path = path;
    if (opts.history) this.records.push(...opts.history);
    if (path) this.#file = Deno.openSync(path, { write: true, create: true, append: true });
    if (opts.tensorboardDir) this.#tb = TensorBoardWriter.open(opts.tensorboardDir);
  }

  /** Path of the TensorBoard event file, when one is written. */
  get tensorboardPath(): string | null {
    return this.#tb?.path ?? null;
  }

  /** Append one record (with a timestamp) to the file, memory and TensorBoard. */
  log(rec: MetricRecord): MetricRecord {
    const full = { ...rec, time: new Date().toISOString() };
    this.records.push(full);
    if (this.#file) {
      const line = new TextEncoder().encode(JSON.stringify(full, jsonSafe) + "\n");
      let off = 0;
      while (off < line.length) off += this.#file.writeSync(line.subarray(off));
    }
    if (this.#tb && rec.type !== "event") {
      const scalars: Record<string, number> = {};
      for (const [k, v] of Object.entries(rec)) {
        if (typeof v === "number" && k !== "step") scalars[`${rec.type}/${k}`] = v;
      }
      this.#tb.scalars(rec.step, scalars);
    }
    return full;
  }

  /** (step, loss) of train records. */
  trainLoss(): [number, number][] {
    return this.records.filter((r) => r.type === "train" && typeof r.loss === "number")
      .map((r) => [r.step, r.loss as number]);
  }

  /** (step, loss) of eval records. */
  evalLoss(): [number, number][] {
    return this.records.filter((r) => r.type === "eval" && typeof r.loss === "number")
      .map((r) => [r.step, r.loss as number]);
  }

  close(): void {
    this.#tb?.close();
    try {
      this.#file?.close();
    } catch { /* closed */ }
    this.#file = null;
  }
}

/** JSON replacer: non-finite numbers become strings ("NaN", "Infinity") instead of null. */
export function jsonSafe(_k: string, v: unknown): unknown {
  if (typeof v === "number" && !Number.isFinite(v)) return String(v);
  if (typeof v === "bigint") return Number(v);
  return v;
}

/** Read a metrics.jsonl file back (skips a torn last line left by a crash). */
export function readMetrics(path: string): MetricRecord[] {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch {
    return [];
  }
  const out: MetricRecord[] = [];
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    try {
      out.push(JSON.parse(line));
    } catch { /* torn line */ }
  }
  return out;
}
