/**
 * A generated visual-question dataset of coloured shapes, drawn in memory (no files).
 *
 * Each sample is one small RGB image on a white background and one question with a one-word
 * answer, drawn from a deliberately small vocabulary so that a tiny VLM can learn it in minutes:
 *
 * | kind  | image                                   | answers                        |
 * |-------|-----------------------------------------|--------------------------------|
 * | color | one shape anywhere                      | red, green, blue, yellow       |
 * | shape | one larger shape near the centre (± 10%) | circle, square, triangle       |
 * | count | 1–3 shapes in distinct cells of a 3×3 grid | one, two, three             |
 * | where | one shape in the left/right/top/bottom zone | left, right, top, bottom    |
 *
 * Sample k of a dataset is a pure function of `(seed, k)`: the order is deterministic, the
 * state is just the position, and any position can be resumed.
 *
 * @module
 */

import type { RgbImage } from "../image.ts";
import { hash32, mulberry32 } from "../rng.ts";
import { type Dataset, type DatasetState, type Sample, SkipCounter, stateField } from "./types.ts";

/** Colour names and their RGB values. */
export const SHAPE_COLORS: Record<string, [number, number, number]> = {
  red: [220, 30, 30],
  green: [30, 170, 50],
  blue: [30, 60, 220],
  yellow: [240, 200, 0],
};
/** Shape names. */
export const SHAPE_KINDS = ["circle", "square", "triangle"] as const;
/** Count words (index + 1 shapes). */
export const COUNT_WORDS = ["one", "two", "three"] as const;
/** Position words. */
export const POSITIONS = ["left", "right", "top", "bottom"] as const;
/** Question kinds. */
export const QUESTION_KINDS = ["color", "shape", "count", "where"] as const;
export type QuestionKind = typeof QUESTION_KINDS[number];

const QUESTIONS: Record<QuestionKind, string[]> = {
  color: ["What color is the shape?", "What is the color of the shape?"],
  shape: ["What shape is this?", "Which shape is shown?"],
  count: ["How many shapes are there?", "How many shapes are in the image?"],
  where: ["Where is the shape?", "Is the shape on the left, right, top or bottom?"],
};

/** Every answer the generator can produce. */
export const SHAPES_ANSWERS: readonly string[] = [
  ...Object.keys(SHAPE_COLORS),
  ...SHAPE_KINDS,
  ...COUNT_WORDS,
  ...POSITIONS,
];

/** One drawn shape (pixel units; `r` is the half-size). */
export interface DrawnShape {
  kind: typeof SHAPE_KINDS[number];
  color: string;
  cx: number;
  cy: number;
  r: number;
}

/** Options of {@link ShapesDataset}. */
export interface ShapesOptions {
  seed?: number;
  /** Image side in pixels (≥ 16). Default 64. */
  imageSize?: number;
  /** Samples per pass; default unbounded. */
  length?: number;
  /** Question kinds drawn uniformly from this list (repeat one to weight it); default all four. */
  kinds?: readonly QuestionKind[];
}

/** A generated sample with what was drawn. */
export interface ShapesSample extends Sample {
  image: RgbImage;
  kind: QuestionKind;
  shapes: DrawnShape[];
}

function inside(s: DrawnShape, x: number, y: number): boolean {
  const dx = x - s.cx, dy = y - s.cy;
  switch (s.kind) {
    case "circle":
      return dx * dx + dy * dy <= s.r * s.r;
    case "square":
      // The full 2r × 2r box: 27% more area than the circle and corners 1.41r out, so the two
      // stay tellable apart at the few-pixel sizes of small images.
      return Math.abs(dx) <= s.r && Math.abs(dy) <= s.r;
    case "triangle": {
      // Apex up: y from cy − r (apex) to cy + r (base); half-width grows linearly to r.
      if (dy < -s.r || dy > s.r) return false;
      return Math.abs(dx) <= (dy + s.r) / 2;
    }
  }
}

/** Draws shapes on a white square canvas (pixel centres sampled, 2×2 supersampled). */
export function drawShapes(size: number, shapes: DrawnShape[]): RgbImage {
  const data = new Uint8Array(size * size * 3).fill(255);
  const offsets = [0.25, 0.75];
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      let r = 0, g = 0, b = 0;
      for (const oy of offsets) {
        for (const ox of offsets) {
          let c: [number, number, number] = [255, 255, 255];
          for (const s of shapes) if (inside(s, x + ox, y + oy)) c = SHAPE_COLORS[s.color];
          r += c[0];
          g += c[1];
          b += c[2];
        }
      }
      const p = (y * size + x) * 3;
      data[p] = Math.round(r / 4);
      data[p + 1] = Math.round(g / 4);
      data[p + 2] = Math.round(b / 4);
    }
  }
  return { width: size, height: size, data };
}

/** Generates sample `index` of the sequence for `seed` (pure function). */
export function generateShapesSample(
  seed: number,
  index: number,
  imageSize: number,
  kinds: readonly QuestionKind[] = QUESTION_KINDS,
): ShapesSample {
  const rnd = mulberry32(hash32(seed, "shapes", index));
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)];
  const colors = Object.keys(SHAPE_COLORS);
  const S = imageSize;
  const kind = pick(kinds);
  const shapes: DrawnShape[] = [];
  let answer: string;
  if (kind === "count") {
    const n = 1 + Math.floor(rnd() * 3);
    const cells = [0, 1, 2, 3, 4, 5, 6, 7, 8];
    const cell = S / 3;
    for (let i = 0; i < n; i++) {
      const c = cells.splice(Math.floor(rnd() * cells.length), 1)[0];
      const r = cell * (0.28 + 0.1 * rnd());
      const slack = Math.max(0, cell / 2 - r - 1); // keep a pixel of white between cells
      shapes.push({
        kind: pick(SHAPE_KINDS),
        color: pick(colors),
        cx: (c % 3 + 0.5) * cell + (rnd() * 2 - 1) * slack,
        cy: (Math.floor(c / 3) + 0.5) * cell + (rnd() * 2 - 1) * slack,
        r,
      });
    }
    answer = COUNT_WORDS[n - 1];
  } else {
    // Shape questions show a larger shape (half-size 18–26% of the image, not 12–20%).
    const r = S * ((kind === "shape" ? 0.18 : 0.12) + 0.08 * rnd());
    let cx: number, cy: number;
    let where: typeof POSITIONS[number] | undefined;
    if (kind === "where") {
      where = pick(POSITIONS);
      const near = r + S * 0.04 + rnd() * S * 0.06; // distance of the centre from its edge
      const along = S / 2 + (rnd() * 2 - 1) * S * 0.1;
      cx = where === "left" ? near : where === "right" ? S - near : along;
      cy = where === "top" ? near : where === "bottom" ? S - near : along;
    } else if (kind === "shape") {
      // Near the centre: telling shapes apart anywhere in the image needs translation
      // invariance that a tiny model cannot learn from a few thousand examples in minutes.
      cx = S / 2 + (rnd() * 2 - 1) * S * 0.1;
      cy = S / 2 + (rnd() * 2 - 1) * S * 0.1;
    } else {
      cx = r + rnd() * (S - 2 * r);
      cy = r + rnd() * (S - 2 * r);
    }
    const shape: DrawnShape = { kind: pick(SHAPE_KINDS), color: pick(colors), cx, cy, r };
    shapes.push(shape);
    answer = kind === "color" ? shape.color : kind === "shape" ? shape.kind : where!;
  }
  return {
    id: `shapes:${seed}:${index}`,
    image: drawShapes(S, shapes),
    question: pick(QUESTIONS[kind]),
    answer,
    source: "shapes",
    kind,
    shapes,
  };
}

/** The generated shapes dataset (see module docs). */
export class ShapesDataset implements Dataset {
  readonly name: string;
  readonly skips: SkipCounter = new SkipCounter();
  readonly seed: number;
  readonly imageSize: number;
  readonly length: number;
  readonly kinds: readonly QuestionKind[];
  #pos = 0;
  #epoch = 0;

  constructor(opts: ShapesOptions = {}) {
    this.seed = opts.seed ?? 0;
    this.imageSize = opts.imageSize ?? 64;
    this.length = opts.length ?? Infinity;
    this.kinds = opts.kinds ?? QUESTION_KINDS;
    if (!Number.isInteger(this.imageSize) || this.imageSize < 16) {
      throw new Error(`shapes: imageSize must be an integer >= 16, got ${this.imageSize}`);
    }
    if (this.kinds.length === 0 || this.kinds.some((k) => !QUESTION_KINDS.includes(k))) {
      throw new Error(`shapes: kinds must be among ${QUESTION_KINDS.join(", ")}`);
    }
    this.name = `shapes(seed=${this.seed}, ${this.imageSize}px)`;
  }

  next(): Promise<ShapesSample | undefined> {
    if (this.#pos >= this.length) return Promise.resolve(undefined);
    return Promise.resolve(
      generateShapesSample(this.seed, this.#pos++, this.imageSize, this.kinds),
    );
  }

  rewind(epoch: number): void {
    this.#epoch = epoch;
    this.#pos = 0;
  }

  state(): DatasetState {
    return { kind: "shapes", seed: this.seed, epoch: this.#epoch, pos: this.#pos };
  }

  restore(state: DatasetState): void {
    if (state.kind !== "shapes" || state.seed !== this.seed) {
      throw new Error(
        `shapes: state is for ${state.kind} seed ${state.seed}, not seed ${this.seed}`,
      );
    }
    this.#epoch = stateField<number>(state, "epoch", "number", "shapes");
    this.#pos = stateField<number>(state, "pos", "number", "shapes");
  }
}
