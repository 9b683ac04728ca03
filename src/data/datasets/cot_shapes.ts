/**
 * Generated chain-of-thought questions about scenes of several coloured shapes (stage 3 demo
 * data), drawn with the shapes dataset's renderer.
 *
 * A scene puts 2–4 shapes into distinct cells of a 3×3 grid (as the shapes `count` kind does).
 * Each question needs a few steps, and the rationale writes them out:
 *
 * | kind        | question                                         | rationale → answer          |
 * |-------------|--------------------------------------------------|-----------------------------|
 * | count_color | How many red shapes are there?                   | lists the colours in reading order, counts the asked one → one … four |
 * | left_right  | Is the red shape left or right of the blue one?  | the column of each → left / right |
 * | leftmost    | What color is the leftmost shape?                | the colours from left to right → the first |
 *
 * A sample is a {@link ReasoningSample}: `rationale` and `finalAnswer` separately, and `answer`
 * = formatReasoning(rationale, finalAnswer, format) for the dataset's reasoning format (the
 * stage-3 training target). Sample k is a pure function of (seed, k), so any position resumes.
 *
 * @module
 */

import type { RgbImage } from "../image.ts";
import { formatReasoning, type ReasoningFormat } from "../reasoning.ts";
import { hash32, mulberry32 } from "../rng.ts";
import { type DrawnShape, drawShapes, SHAPE_COLORS, SHAPE_KINDS } from "./shapes.ts";
import {
  type Dataset,
  type DatasetState,
  type Sample,
  SkipCounter,
  stateField,
  type Turn,
} from "./types.ts";

/** A sample whose answer carries reasoning (stage 3 data, GRPO prompts). */
export interface ReasoningSample extends Sample {
  rationale: string;
  /** The final answer alone (what rewards and accuracy compare against). */
  finalAnswer: string;
  /** Earlier turns of the conversation before `question` (context, never trained). */
  history?: Turn[];
}

/** The chain-of-thought question kinds. */
export const COT_KINDS = ["count_color", "left_right", "leftmost"] as const;
export type CotKind = typeof COT_KINDS[number];

/** Count words for 1..4. */
export const COT_COUNT_WORDS = ["one", "two", "three", "four"] as const;
const COLUMN_WORDS = ["left", "middle", "right"] as const;

/** A generated scene question with what was drawn. */
export interface CotShapesSample extends ReasoningSample {
  image: RgbImage;
  kind: CotKind;
  shapes: DrawnShape[];
  /** Grid cell (0..8, row-major) of each shape. */
  cells: number[];
  /** The colours the question names ([a, b]; b = a when it names one). */
  asked: [string, string];
}

/** Scene facts a rationale is written from (a scene, or a deliberately wrong copy of one). */
interface Scene {
  colors: string[];
  cells: number[];
}

/** Rationale and answer of `kind` for a scene; `a`, `b` are the colours a question names. */
export function cotReasoning(
  kind: CotKind,
  scene: Scene,
  a: string,
  b: string,
): { rationale: string; answer: string } {
  // reading order = cell order
  const order = scene.cells.map((c, i) => [c, i]).sort((x, y) => x[0] - y[0]).map((x) => x[1]);
  // Terse, one step per clause, in words a small model's vocabulary already has (the demo
  // trains these in minutes): list what is seen, then derive the answer from the list.
  if (kind === "count_color") {
    const list = order.map((i) => scene.colors[i]);
    const k = list.filter((c) => c === a).length;
    const word = k === 0 ? "zero" : COT_COUNT_WORDS[k - 1];
    return { rationale: `shapes: ${list.join(", ")}. ${a}: ${word}.`, answer: word };
  }
  const col = (i: number) => scene.cells[i] % 3;
  if (kind === "left_right") {
    const ia = scene.colors.indexOf(a), ib = scene.colors.indexOf(b);
    const ca = col(ia), cb = col(ib);
    const side = ca < cb ? "left" : "right";
    return {
      rationale: `${a}: ${COLUMN_WORDS[ca]}, ${b}: ${COLUMN_WORDS[cb]}. so ${a} is ${side}.`,
      answer: side,
    };
  }
  const byCol = [...scene.colors.keys()].sort((x, y) => col(x) - col(y));
  const first = scene.colors[byCol[0]];
  return {
    rationale: `left to right: ${byCol.map((i) => scene.colors[i]).join(", ")}. first: ${first}.`,
    answer: first,
  };
}

/** Generates sample `index` for `seed` (pure function). */
export function generateCotShapesSample(
  seed: number,
  index: number,
  imageSize: number,
  format: ReasoningFormat,
  kinds: readonly CotKind[] = COT_KINDS,
): CotShapesSample {
  const rnd = mulberry32(hash32(seed, "cot_shapes", index));
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)];
  const kind = pick(kinds);
  const palette = Object.keys(SHAPE_COLORS);
  const S = imageSize, cell = S / 3;
  // count_color: 2–4 shapes, colours may repeat; left_right: 2 and leftmost: 2–3 shapes of
  // distinct colours in distinct columns
  const n = kind === "count_color"
    ? 2 + Math.floor(rnd() * 3)
    : kind === "left_right"
    ? 2
    : 2 + Math.floor(rnd() * 2);
  const cells: number[] = [];
  const colors: string[] = [];
  let countTarget = "";
  if (kind === "count_color") {
    // k of the n shapes (uniform in 1..n) have the asked colour, the others any other colour
    const free = [0, 1, 2, 3, 4, 5, 6, 7, 8];
    const target = pick(palette), k = 1 + Math.floor(rnd() * n);
    const rest = palette.filter((c) => c !== target);
    const cols = Array.from({ length: n }, (_, i) => (i < k ? target : pick(rest)));
    for (let i = 0; i < n; i++) {
      cells.push(free.splice(Math.floor(rnd() * free.length), 1)[0]);
      colors.push(cols.splice(Math.floor(rnd() * cols.length), 1)[0]);
    }
    countTarget = target;
  } else {
    const columns = [0, 1, 2], free = [...palette];
    for (let i = 0; i < n; i++) {
      const c = columns.splice(Math.floor(rnd() * columns.length), 1)[0];
      cells.push(Math.floor(rnd() * 3) * 3 + c);
      colors.push(free.splice(Math.floor(rnd() * free.length), 1)[0]);
    }
  }
  const shapes: DrawnShape[] = cells.map((c, i) => {
    const r = cell * (0.38 + 0.08 * rnd()); // large: a cell's colour must be easy to read
    const slack = Math.max(0, cell / 2 - r - 1);
    return {
      kind: pick(SHAPE_KINDS),
      color: colors[i],
      cx: (c % 3 + 0.5) * cell + (rnd() * 2 - 1) * slack,
      cy: (Math.floor(c / 3) + 0.5) * cell + (rnd() * 2 - 1) * slack,
      r,
    };
  });
  const a = kind === "count_color" ? countTarget : pick(colors);
  const b = pick(colors.filter((c) => c !== a)) ?? a;
  const question = kind === "count_color"
    ? `How many ${a} shapes are there?`
    : kind === "left_right"
    ? `Is the ${a} shape left or right of the ${b} shape?`
    : "What color is the leftmost shape?";
  const { rationale, answer } = cotReasoning(kind, { colors, cells }, a, b);
  return {
    id: `cot_shapes:${seed}:${index}`,
    image: drawShapes(S, shapes),
    question,
    rationale,
    finalAnswer: answer,
    answer: formatReasoning(rationale, answer, format),
    source: "cot_shapes",
    kind,
    shapes,
    cells,
    asked: [a, b],
  };
}

/** Options of {@link CotShapesDataset}. */
export interface CotShapesOptions {
  seed?: number;
  /** Image side in pixels (≥ 24). Default 48. */
  imageSize?: number;
  /** Samples per pass; default unbounded. */
  length?: number;
  format?: ReasoningFormat;
  kinds?: readonly CotKind[];
}

/** Shared by the generated datasets: a pure function of (seed, position), resumable. */
export abstract class GeneratedDataset<T extends Sample> implements Dataset {
  abstract readonly name: string;
  readonly skips: SkipCounter = new SkipCounter();
  #pos = 0;
  #epoch = 0;
  constructor(readonly kind: string, readonly seed: number, readonly length: number) {}

  /** Sample `index` of the sequence. */
  abstract sample(index: number): T;

  next(): Promise<T | undefined> {
    if (this.#pos >= this.length) return Promise.resolve(undefined);
    return Promise.resolve(this.sample(this.#pos++));
  }

  rewind(epoch: number): void {
    this.#epoch = epoch;
    this.#pos = 0;
  }

  state(): DatasetState {
    return { kind: this.kind, seed: this.seed, epoch: this.#epoch, pos: this.#pos };
  }

  restore(state: DatasetState): void {
    if (state.kind !== this.kind || state.seed !== this.seed) {
      throw new Error(
        `${this.kind}: state is for ${state.kind} seed ${state.seed}, not seed ${this.seed}`,
      );
    }
    this.#epoch = stateField<number>(state, "epoch", "number", this.kind);
    this.#pos = stateField<number>(state, "pos", "number", this.kind);
  }
}

/** The generated chain-of-thought shapes dataset (see module docs). */
export class CotShapesDataset extends GeneratedDataset<CotShapesSample> {
  readonly name: string;
  readonly imageSize: number;
  readonly format: ReasoningFormat;
  readonly kinds: readonly CotKind[];

  constructor(opts: CotShapesOptions = {}) {
    super("cot_shapes", opts.seed ?? 0, opts.length ?? Infinity);
    this.imageSize = opts.imageSize ?? 48;
    this.format = opts.format ?? "think";
    this.kinds = opts.kinds ?? COT_KINDS;
    if (!Number.isInteger(this.imageSize) || this.imageSize < 24) {
      throw new Error(`cot_shapes: imageSize must be an integer >= 24, got ${this.imageSize}`);
    }
    if (!this.kinds.length || this.kinds.some((k) => !COT_KINDS.includes(k))) {
      throw new Error(`cot_shapes: kinds must be among ${COT_KINDS.join(", ")}`);
    }
    this.name = `cot_shapes(seed=${this.seed}, ${this.imageSize}px, ${this.format})`;
  }

  sample(index: number): CotShapesSample {
    return generateCotShapesSample(this.seed, index, this.imageSize, this.format, this.kinds);
  }
}
