/**
 * Human-readable views of encoded samples: which text the labels supervise. Used by tests and
 * handy when checking a new dataset or chat template.
 *
 * @module
 */

import { IGNORE_INDEX } from "./processor.ts";
import type { TextTokenizer } from "./tokenizer.ts";

/**
 * The supervised spans of a row: each maximal run of positions whose label is not −100,
 * decoded (special tokens kept). Throws when a label differs from its input id (labels are
 * unshifted: the label at t is the token at t).
 */
export function labelSpans(
  tok: TextTokenizer,
  inputIds: ArrayLike<number>,
  labels: ArrayLike<number>,
): string[] {
  if (inputIds.length !== labels.length) {
    throw new Error(`labels length ${labels.length} != ids length ${inputIds.length}`);
  }
  const spans: string[] = [];
  let run: number[] = [];
  for (let i = 0; i <= labels.length; i++) {
    const l = i < labels.length ? labels[i] : IGNORE_INDEX;
    if (l !== IGNORE_INDEX) {
      if (l !== inputIds[i]) throw new Error(`label ${l} at ${i} differs from id ${inputIds[i]}`);
      run.push(l);
    } else if (run.length) {
      spans.push(tok.decode(run));
      run = [];
    }
  }
  return spans;
}

/**
 * The decoded row with supervised spans wrapped in ⟦ ⟧ and runs of `<|image_pad|>` shortened
 * to `<|image_pad|>×N`.
 */
export function renderLabeled(
  tok: TextTokenizer,
  inputIds: ArrayLike<number>,
  labels: ArrayLike<number>,
  attentionMask?: ArrayLike<number>,
): string {
  const n = attentionMask ? Array.from(attentionMask).lastIndexOf(1) + 1 : inputIds.length;
  const imagePad = tok.tokenToId("<|image_pad|>");
  let out = "";
  let i = 0;
  while (i < n) {
    const on = labels[i] !== IGNORE_INDEX;
    let j = i;
    const ids: number[] = [];
    while (j < n && (labels[j] !== IGNORE_INDEX) === on) ids.push(inputIds[j++]);
    let text = "";
    for (let k = 0; k < ids.length;) {
      if (ids[k] === imagePad) {
        let m = k;
        while (m < ids.length && ids[m] === imagePad) m++;
        text += `<|image_pad|>×${m - k}`;
        k = m;
      } else {
        let m = k;
        while (m < ids.length && ids[m] !== imagePad) m++;
        text += tok.decode(ids.slice(k, m));
        k = m;
      }
    }
    out += on ? `⟦${text}⟧` : text;
    i = j;
  }
  return out;
}
