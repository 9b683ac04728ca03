/**
 * The common shape of every dataset: a fixed, deterministic sequence of {@link Sample}s read one
 * at a time, whose position is a small JSON {@link DatasetState} that a trainer stores in its
 * checkpoints.
 *
 * Contract of a {@link Dataset}:
 * - `next()` returns the next sample of the current pass, or `undefined` when the pass is over
 *   (infinite datasets never end).
 * - Which sample sits at which position never depends on the pass; the pass number (`epoch`)
 *   may only change per-sample choices such as which conversation turn is used.
 * - `state()` after k calls of `next()`, given to `restore()` on a fresh instance built with the
 *   same options, makes that instance continue with sample k + 1 exactly.
 * - Unusable records (no image, no text, a refusal answer, a missing file) are skipped inside
 *   the dataset and counted in `skips` by reason; they never throw.
 *
 * @module
 */

import type { ImageSource } from "../image.ts";

/** One question/answer exchange. */
export interface Turn {
  user: string;
  assistant: string;
}

/**
 * A training example: one image and a conversation about it.
 *
 * `question`/`answer` are the first (or only) exchange; `turns`, when present, is the whole
 * conversation (its first element equals question/answer) and every assistant turn is trained.
 * The image goes into the user turn that contains a literal `<image>` marker, else in front of
 * the first question.
 */
export interface Sample {
  /** Stable identity of the underlying record, e.g. `finevision:coco/train-0.parquet#12`. */
  id: string;
  /** Encoded file bytes (decoded later, in a worker) or RGB pixels drawn in memory. */
  image: ImageSource;
  question: string;
  answer: string;
  turns?: Turn[];
  /** Where the record came from (FineVision subset, JSON file, generator). */
  source?: string;
}

/** JSON value, for dataset states. */
export type JsonValue =
  | null
  | boolean
  | number
  | string
  | JsonValue[]
  | { [key: string]: JsonValue };

/** A dataset's position, JSON-serialisable. */
export type DatasetState = { [key: string]: JsonValue };

/** A deterministic, resumable sequence of samples (see the module docs for the contract). */
export interface Dataset {
  /** Human-readable name for reports. */
  readonly name: string;
  /** Counts of records skipped so far, by reason. */
  readonly skips: SkipCounter;
  /** Next sample of the current pass, or undefined at the end of the pass. */
  next(): Promise<Sample | undefined>;
  /** Restarts the sequence at its first sample for pass number `epoch` (0-based). */
  rewind(epoch: number): void;
  /** Current position (JSON). */
  state(): DatasetState;
  /** Continues from a position returned by `state()` of a dataset with the same options. */
  restore(state: DatasetState): void;
  /** Releases files or connections. */
  close?(): Promise<void> | void;
}

/** Counts skipped records by reason and keeps the first few examples of each. */
export class SkipCounter {
  readonly counts: Record<string, number> = {};
  readonly examples: Record<string, string[]> = {};
  static readonly MAX_EXAMPLES = 3;

  /** Records one skipped item. `detail` (an id, a path, an error message) is kept as example. */
  add(reason: string, detail?: string): void {
    this.counts[reason] = (this.counts[reason] ?? 0) + 1;
    if (detail !== undefined) {
      const ex = (this.examples[reason] ??= []);
      if (ex.length < SkipCounter.MAX_EXAMPLES) ex.push(detail);
    }
  }

  /** Total skipped items. */
  get total(): number {
    return Object.values(this.counts).reduce((a, b) => a + b, 0);
  }

  /** One line per reason: `reason: count (e.g. example, example)`. Empty when nothing. */
  report(): string {
    return Object.entries(this.counts)
      .map(([r, n]) => {
        const ex = this.examples[r];
        return `${r}: ${n}${ex?.length ? ` (e.g. ${ex.join("; ")})` : ""}`;
      })
      .join("\n");
  }

  /** JSON form for checkpoint states. */
  toJSON(): DatasetState {
    return { counts: { ...this.counts }, examples: structuredClone(this.examples) };
  }

  /** Replaces the contents with a `toJSON()` value. */
  load(v: JsonValue | undefined): void {
    for (const k of Object.keys(this.counts)) delete this.counts[k];
    for (const k of Object.keys(this.examples)) delete this.examples[k];
    if (!v || typeof v !== "object" || Array.isArray(v)) return;
    const counts = v.counts as Record<string, number> | undefined;
    const examples = v.examples as Record<string, string[]> | undefined;
    Object.assign(this.counts, counts ?? {});
    for (const [k, e] of Object.entries(examples ?? {})) this.examples[k] = [...e];
  }
}

/** Reads a required field of a restored state, with a clear error when it is missing. */
export function stateField<T extends JsonValue>(
  state: DatasetState,
  key: string,
  type: "number" | "string" | "boolean" | "object",
  who: string,
): T {
  const v = state[key];
  const actual = v === null ? "null" : typeof v;
  const ok = actual === type;
  if (!ok) throw new Error(`${who}: state field "${key}" must be a ${type}, got ${actual}`);
  return v as T;
}
