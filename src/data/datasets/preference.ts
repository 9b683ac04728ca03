/**
 * Generated preference pairs about chain-of-thought shapes scenes (stage 4 demo data).
 *
 * Each pair takes a {@link generateCotShapesSample} question: `chosen` is its sound rationale and
 * correct answer; `rejected` is, by a seeded draw, one of
 *   - "wrong fact": the rationale of a corrupted scene (one shape's colour or column changed),
 *     leading to a wrong answer;
 *   - "contradiction": the sound rationale followed by a wrong answer;
 *   - "unsupported": a wrong answer with no reasoning at all.
 * Both texts are formatted with the dataset's reasoning format. Pair k is a pure function of
 * (seed, k).
 *
 * @module
 */

import { formatReasoning, type ReasoningFormat } from "../reasoning.ts";
import { hash32, mulberry32 } from "../rng.ts";
import {
  COT_COUNT_WORDS,
  COT_KINDS,
  type CotKind,
  cotReasoning,
  generateCotShapesSample,
  GeneratedDataset,
} from "./cot_shapes.ts";
import type { PreferenceSample } from "./records.ts";
import { SHAPE_COLORS } from "./shapes.ts";

/** How a rejected completion was made. */
export type RejectionKind = "wrong fact" | "contradiction" | "unsupported";

/** A generated pair, with how its rejected side was made. */
export interface ShapesPreferenceSample extends PreferenceSample {
  kind: CotKind;
  rejection: RejectionKind;
}

/** A wrong answer of the same type as `answer` for `kind`. */
function wrongAnswer(kind: CotKind, answer: string, rnd: () => number): string {
  const pool = kind === "count_color"
    ? [...COT_COUNT_WORDS]
    : kind === "left_right"
    ? ["left", "right"]
    : Object.keys(SHAPE_COLORS);
  const others = pool.filter((x) => x !== answer);
  return others[Math.floor(rnd() * others.length)];
}

/** Generates pair `index` for `seed` (pure function). */
export function generatePreferenceSample(
  seed: number,
  index: number,
  imageSize: number,
  format: ReasoningFormat,
  kinds: readonly CotKind[] = COT_KINDS,
): ShapesPreferenceSample {
  const s = generateCotShapesSample(seed, index, imageSize, format, kinds);
  const rnd = mulberry32(hash32(seed, "preference", index));
  const draw = rnd();
  let rejection: RejectionKind = draw < 0.5
    ? "wrong fact"
    : draw < 0.8
    ? "contradiction"
    : "unsupported";
  let rejected = "";
  if (rejection === "wrong fact") {
    // corrupt one shape: another colour (counting, leftmost) or another column (left/right)
    const colors = s.shapes.map((x) => x.color), cells = [...s.cells];
    const i = Math.floor(rnd() * colors.length);
    if (s.kind === "left_right") {
      cells[i] = Math.floor(cells[i] / 3) * 3 + (2 - (cells[i] % 3));
    } else {
      const palette = Object.keys(SHAPE_COLORS).filter((c) =>
        s.kind === "count_color" ? c !== colors[i] : !colors.includes(c)
      );
      colors[i] = palette[Math.floor(rnd() * palette.length)];
    }
    const [a, b] = s.asked;
    // a corrupted scene may no longer hold the shape the question names
    const bad = colors.includes(a) && colors.includes(b)
      ? cotReasoning(s.kind, { colors, cells }, a, b)
      : null;
    if (bad && bad.answer !== s.finalAnswer) {
      rejected = formatReasoning(bad.rationale, bad.answer, format);
    } else rejection = "contradiction";
  }
  if (rejection === "contradiction") {
    rejected = formatReasoning(s.rationale, wrongAnswer(s.kind, s.finalAnswer, rnd), format);
  } else if (rejection === "unsupported") {
    rejected = formatReasoning("", wrongAnswer(s.kind, s.finalAnswer, rnd), format);
  }
  return {
    ...s,
    id: `preference:${seed}:${index}`,
    source: "shapes_preference",
    chosen: s.answer,
    rejected,
    rejection,
  };
}

/** Options of {@link ShapesPreferenceDataset}. */
export interface ShapesPreferenceOptions {
  seed?: number;
  imageSize?: number;
  length?: number;
  format?: ReasoningFormat;
  kinds?: readonly CotKind[];
}

/** The generated preference pairs (see module docs). */
export class ShapesPreferenceDataset extends GeneratedDataset<ShapesPreferenceSample> {
  readonly name: string;
  readonly imageSize: number;
  readonly format: ReasoningFormat;
  readonly kinds: readonly CotKind[];

  constructor(opts: ShapesPreferenceOptions = {}) {
    super("shapes_preference", opts.seed ?? 0, opts.length ?? Infinity);
    this.imageSize = opts.imageSize ?? 48;
    this.format = opts.format ?? "think";
    this.kinds = opts.kinds ?? COT_KINDS;
    this.name = `shapes preferences(seed=${this.seed}, ${this.imageSize}px, ${this.format})`;
  }

  sample(index: number): ShapesPreferenceSample {
    return generatePreferenceSample(this.seed, index, this.imageSize, this.format, this.kinds);
  }
}
