// Batches of rows that share an image: preference pairs (chosen + rejected) and GRPO groups
// (one prompt, G completions). Each image is decoded once and its features are computed once
// per step (SiqvlInputs.imageIndex maps every row to its image).
//
//   encodeCompletion(processor, question, history, completion) → ids + labels covering only the
//     completion and its <|im_end|> (the prompt — earlier turns included — is masked, as TRL's
//     prompt/completion split does: the labels of the last assistant turn are kept), or why it cannot be used
//   sharedImageBatch(rows, images, rowImage, processor) → the collated [R, T] arrays + pixels

import {
  type Batch,
  collate,
  type EncodedSample,
  fitToLength,
  shiftLabels,
} from "../data/collator.ts";
import { IGNORE_INDEX, type SiqvlProcessor } from "../data/processor.ts";
import type { Turn } from "../data/datasets/types.ts";
import type { StepBatch } from "./step.ts";
import type { SiqvlModel } from "../models/siqvl.ts";
import { sequenceLogProbs } from "../tensor/ops/seq_logprob.ts";
import { noGrad, Tensor, tidy } from "../tensor/tensor.ts";

/** Token rows sharing images: [R, T] arrays, pixels [I, 3, S, S], row → image. */
export interface SharedImageBatch extends StepBatch {
  seqLen: number;
  inputIds: Int32Array;
  attentionMask: Int32Array;
  labels: Int32Array;
  pixels: Float32Array;
  pixelShape: [number, number, number, number];
  imageIndex: Int32Array;
  /** Label tokens (after the causal shift) per row. */
  rowTokens: Float32Array;
}

/** The ids and completion-only labels of prompt + completion, or the reason it is unusable. */
export function encodeCompletion(
  processor: SiqvlProcessor,
  question: string,
  history: Turn[] | undefined,
  completion: string,
  maxLength?: number,
): { inputIds: Int32Array; labels: Int32Array } | string {
  let full;
  try {
    full = processor.encode({
      turns: [...(history ?? []), { user: question, assistant: completion }],
    });
  } catch (e) {
    return `bad conversation: ${(e as Error).message}`;
  }
  // the last labelled span is the completion (+ <|im_end|>); earlier answers are prompt
  const labels = full.labels!.slice();
  let end = labels.length - 1;
  while (end >= 0 && labels[end] === IGNORE_INDEX) end--;
  if (end < 0) return "no completion token";
  let start = end;
  while (start > 0 && labels[start - 1] !== IGNORE_INDEX) start--;
  labels.fill(IGNORE_INDEX, 0, start);
  const fit = fitToLength({ inputIds: full.inputIds, labels, pixelValues: [] }, {
    ids: processor.ids,
    imageSize: processor.image.size,
    maxLength,
  });
  if (!fit.ok) return fit.reason;
  return { inputIds: fit.sample.inputIds, labels: fit.sample.labels! };
}

/** Collate rows whose images are `images[rowImage[r]]` (each image given once). */
export function sharedImageBatch(
  rows: { inputIds: Int32Array; labels: Int32Array }[],
  images: Float32Array[],
  rowImage: number[],
  processor: SiqvlProcessor,
): SharedImageBatch {
  // collate stacks pixels in row order: give each image to the first row that uses it, and
  // renumber images in that order
  const order: number[] = [];
  const seen = new Map<number, number>();
  const enc: EncodedSample[] = rows.map((r, i) => {
    const img = rowImage[i];
    let px: Float32Array[] = [];
    if (!seen.has(img)) {
      seen.set(img, order.length);
      order.push(img);
      px = [images[img]];
    }
    return { inputIds: r.inputIds, labels: r.labels, pixelValues: px };
  });
  const b: Batch = collate(enc, { ids: processor.ids, imageSize: processor.image.size });
  if (b.batch !== rows.length) {
    throw new Error(`internal: collate dropped ${rows.length - b.batch} of the shared-image rows`);
  }
  const R = b.batch, T = b.seqLen;
  const { targets } = shiftLabels(b.labels!, R, T);
  const rowTokens = new Float32Array(R);
  for (let r = 0; r < R; r++) {
    for (let t = 0; t < T; t++) if (targets[r * T + t] !== IGNORE_INDEX) rowTokens[r]++;
  }
  return {
    batch: R,
    numTokens: b.numTokens,
    numLossTokens: b.numLossTokens,
    seqLen: T,
    inputIds: b.inputIds,
    attentionMask: b.attentionMask,
    labels: b.labels!,
    pixels: b.pixels,
    pixelShape: b.pixelShape,
    imageIndex: Int32Array.from(rowImage, (i) => seen.get(i)!),
    rowTokens,
  };
}

/**
 * Label-token log-probs of a batch under `model` (rows share images through imageIndex):
 * "row" → the per-row sums [R]; "token" → every label token's log-prob in row-major order [N].
 */
export function labelLogProbs(
  model: SiqvlModel,
  b: SharedImageBatch,
  per: "row" | "token",
): Tensor {
  return tidy(() => {
    const px = b.pixelShape[0]
      ? noGrad(() => Tensor.from(model.gpu, b.pixels, b.pixelShape, "f32"))
      : undefined;
    const R = b.batch, T = b.seqLen;
    const out = model.forward({
      inputIds: b.inputIds,
      batch: R,
      seqLen: T,
      attentionMask: b.attentionMask,
      pixelValues: px,
      imageIndex: b.imageIndex,
    });
    const { targets, count } = shiftLabels(b.labels, R, T);
    let seg: Int32Array, n: number;
    if (per === "row") {
      seg = Int32Array.from({ length: R * T }, (_, i) => Math.floor(i / T));
      n = R;
    } else {
      seg = new Int32Array(R * T).fill(-1);
      let k = 0;
      for (let i = 0; i < targets.length; i++) if (targets[i] !== IGNORE_INDEX) seg[i] = k++;
      n = count;
    }
    const H = out.hidden.shape[2];
    return sequenceLogProbs(out.hidden.reshape([R * T, H]), model.text.lmHead, targets, seg, n);
  });
}
