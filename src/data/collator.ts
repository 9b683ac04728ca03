/**
 * Batch collation: right-pads token rows to the longest (with `<|endoftext|>`), builds the
 * attention mask and labels (−100 on padding), and stacks every image's `[3, S, S]` pixels
 * into one `[images, 3, S, S]` array in sample order.
 *
 * An optional `maxLength` truncates rows, but never inside an image placeholder run: a sample
 * whose `<|vision_start|> … <|vision_end|>` run would be cut is dropped (its image tokens would
 * no longer match its pixels), as is one left with no supervised token; each drop is reported
 * with its reason.
 *
 * @module
 */

import { IGNORE_INDEX } from "./processor.ts";

/** One encoded sample ready for batching. */
export interface EncodedSample {
  inputIds: Int32Array;
  /** Omitted for inference batches. */
  labels?: Int32Array;
  /** One `[3, S, S]` array per image, in placeholder order. */
  pixelValues: Float32Array[];
  /** Passed through to the batch (ids, questions, answers) for logging and evaluation. */
  id?: string;
  question?: string;
  answer?: string;
}

/** Token ids the collator needs. */
export interface CollatorIds {
  pad: number;
  visionStart: number;
  visionEnd: number;
  imagePad: number;
}

/** Options of {@link collate}. */
export interface CollateOptions {
  ids: CollatorIds;
  /** Image side S. */
  imageSize: number;
  /** Longest row kept (tokens); longer rows are cut or dropped. */
  maxLength?: number;
  /**
   * What happens to a row longer than `maxLength`: "truncate" (default; never inside the image
   * run) or "drop" (the reason starts with "max_length", counted as over-long).
   */
  overLong?: "truncate" | "drop";
  /** If set, each sample must have exactly `images × tokensPerImage` image pads. */
  tokensPerImage?: number;
}

/** A batch: row-major `[B, T]` token arrays and `[I, 3, S, S]` pixels. */
export interface Batch {
  /** B (rows). */
  batch: number;
  /** T (longest row after truncation). */
  seqLen: number;
  inputIds: Int32Array;
  /** 1 for real tokens, 0 for padding. */
  attentionMask: Int32Array;
  /** −100 on padding and on positions without a loss; absent for inference batches. */
  labels?: Int32Array;
  /** f32 [I, 3, S, S], images in the order of their `<|image_pad|>` runs. */
  pixels: Float32Array;
  pixelShape: [number, number, number, number];
  /** Real (non-padding) tokens. */
  numTokens: number;
  /** Targets the loss counts: labels ≠ −100 after the causal shift ({@link shiftLabels}). */
  numLossTokens: number;
  /** Images of each row (the row's image pads come from that many consecutive images). */
  imagesPerSample: number[];
  /** Per row: true length (without padding). */
  lengths: number[];
  ids: (string | undefined)[];
  questions: (string | undefined)[];
  answers: (string | undefined)[];
  /** Samples left out of this batch and why (index into the input list). */
  dropped: { index: number; id?: string; reason: string }[];
}

/** Result of {@link fitToLength}: the (possibly truncated) sample, or why it cannot be kept. */
export type FitResult = { ok: true; sample: EncodedSample } | { ok: false; reason: string };

/**
 * Applies the length limit and the placeholder checks to one sample.
 * Returns the sample (cut to `maxLength` when longer) or the reason to drop it.
 */
export function fitToLength(s: EncodedSample, opts: CollateOptions): FitResult {
  const { ids } = opts;
  const n = s.inputIds.length;
  if (s.labels && s.labels.length !== n) {
    return { ok: false, reason: `labels length ${s.labels.length} != ids length ${n}` };
  }
  if (n === 0) return { ok: false, reason: "empty token sequence" };
  let pads = 0;
  for (let i = 0; i < n; i++) if (s.inputIds[i] === ids.imagePad) pads++;
  if (opts.tokensPerImage !== undefined && pads !== s.pixelValues.length * opts.tokensPerImage) {
    return {
      ok: false,
      reason: `${pads} image tokens for ${s.pixelValues.length} image(s) × ` +
        `${opts.tokensPerImage} tokens`,
    };
  }
  const S = opts.imageSize;
  for (const px of s.pixelValues) {
    if (px.length !== 3 * S * S) {
      return { ok: false, reason: `pixel array of ${px.length} values, expected 3×${S}×${S}` };
    }
  }
  const max = opts.maxLength;
  if (max === undefined || n <= max) return { ok: true, sample: s };
  if (opts.overLong === "drop") {
    return { ok: false, reason: `max_length ${max} is exceeded (sequence of ${n} tokens)` };
  }
  for (let i = max; i < n; i++) {
    const t = s.inputIds[i];
    if (t === ids.visionStart || t === ids.imagePad || t === ids.visionEnd) {
      return {
        ok: false,
        reason: `max_length ${max} cuts the image placeholder (sequence of ${n} tokens)`,
      };
    }
  }
  const cut: EncodedSample = { ...s, inputIds: s.inputIds.slice(0, max) };
  if (s.labels) {
    cut.labels = s.labels.slice(0, max);
    const had = s.labels.some((l) => l !== IGNORE_INDEX);
    if (had && !cut.labels.some((l) => l !== IGNORE_INDEX)) {
      return {
        ok: false,
        reason: `max_length ${max} leaves no answer token (sequence of ${n} tokens)`,
      };
    }
  }
  return { ok: true, sample: cut };
}

/** Collates samples into a right-padded {@link Batch}; unfit samples are dropped and listed. */
export function collate(samples: EncodedSample[], opts: CollateOptions): Batch {
  const kept: EncodedSample[] = [];
  const dropped: Batch["dropped"] = [];
  samples.forEach((s, index) => {
    const r = fitToLength(s, opts);
    if (r.ok) kept.push(r.sample);
    else dropped.push({ index, id: s.id, reason: r.reason });
  });
  const B = kept.length;
  const T = kept.reduce((m, s) => Math.max(m, s.inputIds.length), 0);
  const withLabels = kept.length > 0 && kept.every((s) => s.labels);
  if (kept.some((s) => s.labels) && !withLabels) {
    throw new Error("collate: some samples have labels and some do not");
  }
  const inputIds = new Int32Array(B * T).fill(opts.ids.pad);
  const attentionMask = new Int32Array(B * T);
  const labels = withLabels ? new Int32Array(B * T).fill(IGNORE_INDEX) : undefined;
  const S = opts.imageSize;
  const plane = 3 * S * S;
  const images = kept.reduce((n, s) => n + s.pixelValues.length, 0);
  const pixelValues = new Float32Array(images * plane);
  let img = 0;
  kept.forEach((s, b) => {
    const n = s.inputIds.length;
    inputIds.set(s.inputIds, b * T);
    attentionMask.fill(1, b * T, b * T + n);
    if (labels) labels.set(s.labels!, b * T);
    for (const px of s.pixelValues) pixelValues.set(px, (img++) * plane);
  });
  return {
    batch: B,
    seqLen: T,
    inputIds,
    attentionMask,
    labels,
    pixels: pixelValues,
    numTokens: kept.reduce((n, s) => n + s.inputIds.length, 0),
    numLossTokens: labels ? shiftLabels(labels, B, T).count : 0,
    pixelShape: [images, 3, S, S],
    imagesPerSample: kept.map((s) => s.pixelValues.length),
    lengths: kept.map((s) => s.inputIds.length),
    ids: kept.map((s) => s.id),
    questions: kept.map((s) => s.question),
    answers: kept.map((s) => s.answer),
    dropped,
  };
}

/**
 * The causal-LM shift (HF): target[b, t] = labels[b, t + 1], −100 at each row's last position
 * and wherever the label is `ignoreIndex`; `count` = targets the loss averages over. The one
 * place label tokens are counted (batches, the model's loss, the trainer's weighting).
 */
export function shiftLabels(
  labels: ArrayLike<number>,
  b: number,
  t: number,
  ignoreIndex: number = IGNORE_INDEX,
): { targets: Int32Array; count: number } {
  const targets = new Int32Array(b * t).fill(IGNORE_INDEX);
  let count = 0;
  for (let i = 0; i < b; i++) {
    for (let j = 0; j + 1 < t; j++) {
      const l = labels[i * t + j + 1];
      if (l === ignoreIndex || l === IGNORE_INDEX) continue;
      targets[i * t + j] = l;
      count++;
    }
  }
  return { targets, count };
}

/** The token arrays and pixels of a batch built by hand (benchmarks, fixtures). */
export type BatchArrays = Pick<
  Batch,
  "batch" | "seqLen" | "inputIds" | "attentionMask" | "labels" | "pixels" | "pixelShape"
>;

/** A {@link Batch} from hand-built arrays: counts filled in, one image per row, no metadata. */
export function batchOf(p: BatchArrays): Batch {
  const { batch: B, seqLen: T, attentionMask: mask } = p;
  const lengths = [...Array(B)].map((_, b) =>
    mask.subarray(b * T, (b + 1) * T).reduce((s, v) => s + v, 0)
  );
  return {
    ...p,
    numTokens: lengths.reduce((s, n) => s + n, 0),
    numLossTokens: p.labels ? shiftLabels(p.labels, B, T).count : 0,
    imagesPerSample: [...Array(B)].map(() => p.pixelShape[0] / B),
    lengths,
    ids: [],
    questions: [],
    answers: [],
    dropped: [],
  };
}
