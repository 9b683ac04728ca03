/**
 * Train/eval splits and `max_samples` over any {@link Dataset}.
 *
 * A dataset is a fixed sequence; the split takes positions of it: the evaluation set is the
 * first `maxEvalSamples` samples and the training set the samples after them, up to
 * `maxSamples` in all (as SiQ-VL selects `max_samples` and then splits off the evaluation
 * count). Each split wraps its own instance of the dataset, so they read independently, and
 * every pass of the training split skips the evaluation samples again — they never leak into
 * training.
 *
 * @module
 */

import {
  type Dataset,
  type DatasetState,
  type Sample,
  type SkipCounter,
  stateField,
} from "./types.ts";

/** Positions [start, end) of an inner dataset's sequence, as a dataset of its own. */
export class WindowDataset implements Dataset {
  readonly name: string;
  #pos = 0;
  #entered = false;

  constructor(readonly inner: Dataset, readonly start: number, readonly end = Infinity) {
    if (!(start >= 0 && end >= start)) throw new Error(`window [${start}, ${end}) is empty`);
    this.name = `${inner.name}[${start}:${end === Infinity ? "" : end}]`;
  }

  get skips(): SkipCounter {
    return this.inner.skips;
  }

  /** Samples per pass when the inner dataset knows its length (else Infinity). */
  get length(): number {
    return Math.max(0, Math.min(this.end, datasetLength(this.inner)) - this.start);
  }

  async next(): Promise<Sample | undefined> {
    if (!this.#entered) {
      for (let i = 0; i < this.start; i++) {
        if (!(await this.inner.next())) return undefined;
      }
      this.#entered = true;
    }
    if (this.start + this.#pos >= this.end) return undefined;
    const s = await this.inner.next();
    if (s) this.#pos++;
    return s;
  }

  rewind(epoch: number): void {
    this.inner.rewind(epoch);
    this.#pos = 0;
    this.#entered = false;
  }

  state(): DatasetState {
    return {
      kind: "window",
      window: [this.start, isFinite(this.end) ? this.end : -1],
      pos: this.#pos,
      entered: this.#entered,
      inner: this.inner.state(),
    };
  }

  restore(state: DatasetState): void {
    if (state.kind !== "window") throw new Error(`window: state is for ${state.kind}`);
    const w = stateField<number[]>(state, "window", "object", "window");
    if (w[0] !== this.start || w[1] !== (isFinite(this.end) ? this.end : -1)) {
      throw new Error(
        `data state is for window ${JSON.stringify(w)}, not [${this.start}, ${this.end}): ` +
          "resume with the same --max_samples / --max_eval_samples",
      );
    }
    this.inner.restore(stateField<DatasetState>(state, "inner", "object", "window"));
    this.#pos = stateField<number>(state, "pos", "number", "window");
    this.#entered = stateField<boolean>(state, "entered", "boolean", "window");
  }

  close(): Promise<void> | void {
    return this.inner.close?.();
  }
}

/** Samples per pass of a dataset that says (a `length` property), else Infinity. */
export function datasetLength(d: Dataset): number {
  const n = (d as { length?: unknown }).length;
  return typeof n === "number" && n >= 0 ? n : Infinity;
}

/** Options of {@link splitTrainEval}. */
export interface SplitOptions {
  /** Samples of the sequence used in all (eval + train); default unbounded. */
  maxSamples?: number;
  /** Samples held out for evaluation (the first ones); default 0. */
  maxEvalSamples?: number;
}

/**
 * Builds the training and evaluation splits. `make(role)` must return a fresh dataset with the
 * same sequence each call (the eval instance may differ in per-sample choices, e.g. turn 0).
 */
export async function splitTrainEval(
  make: (role: "train" | "eval") => Dataset | Promise<Dataset>,
  opts: SplitOptions = {},
): Promise<{ train: Dataset; eval: Dataset | undefined }> {
  const total = opts.maxSamples ?? Infinity;
  const evalCount = opts.maxEvalSamples ?? 0;
  if (!(total > 0)) throw new Error(`max_samples must be > 0, got ${opts.maxSamples}`);
  if (!(evalCount >= 0 && evalCount < total)) {
    throw new Error(`max_eval_samples (${evalCount}) must be >= 0 and < max_samples (${total})`);
  }
  const train = new WindowDataset(await make("train"), evalCount, total);
  const evalSet = evalCount > 0 ? new WindowDataset(await make("eval"), 0, evalCount) : undefined;
  return { train, eval: evalSet };
}
