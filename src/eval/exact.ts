// Exact match: the prediction equals one of the references after a normalisation.
//
//   gqa    lmms-eval's `exact_match` with ignore_case + ignore_punctuation (GQA, and the
//          HF-evaluate metric it follows): lower case, then every ASCII punctuation character
//          (Python's string.punctuation) deleted; nothing else (no article or number rules).
//          lmms-eval strips generated text before scoring; references are compared as given.
//   edges  the training-time generation eval (src/train/gen_eval.ts, the demo's accuracy):
//          lower case, surrounding whitespace and punctuation removed.
//   exact  strings compared after trimming only.

import { normalizeAnswer } from "../train/gen_eval.ts";

/** Normalisations of {@link exactMatch}. */
export type ExactRules = "gqa" | "edges" | "exact";

const ASCII_PUNCT = /[!"#$%&'()*+,\-./:;<=>?@[\\\]^_`{|}~]/g;

/** A string normalised by `rules` (the prediction is trimmed first in every profile). */
export function exactNormalize(s: string, rules: ExactRules): string {
  switch (rules) {
    case "gqa":
      return s.toLowerCase().replace(ASCII_PUNCT, "");
    case "edges":
      return normalizeAnswer(s);
    case "exact":
      return s.trim();
  }
}

/** 1 when the trimmed prediction matches any reference under `rules`, else 0. */
export function exactMatch(
  prediction: string,
  answers: readonly string[],
  rules: ExactRules = "gqa",
): number {
  const p = exactNormalize(prediction.trim(), rules);
  return answers.some((a) => exactNormalize(a, rules) === p) ? 1 : 0;
}
