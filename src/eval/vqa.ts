// VQA accuracy (VQAv2, TextVQA, VizWiz): for each of the human answers, count how many of the
// *other* answers equal the prediction; the score is the mean over these leave-one-out subsets
// of min(count / 3, 1). With 10 answers, a prediction 4+ annotators gave scores 1, one 3 gave
// scores 0.9 ((7·1 + 3·(2/3)) / 10), one 2 gave scores 0.6, one 1 gave 0.3. As in the
// reference, a single answer has an empty leave-one-out set and always scores 0: use
// exact_match for single-reference data.
//
// Normalisation before comparing (vqa_normalize.ts):
//   vqav2     lmms-eval's vqav2_process_results: punctuation + digits/articles/contractions on
//             the prediction and on every answer
//   textvqa   lmms-eval's textvqa_process_results: the full EvalAI processor on both sides
//   official  GT-Vision-Lab vqaEval.py: the official tables; the prediction gets punctuation +
//             digits/articles, the answers punctuation only and only when not all identical

import {
  evalAiNormalize,
  processDigitArticle,
  processPunctuation,
  stripWhitespace,
  vqaNormalize,
} from "./vqa_normalize.ts";

/** Normalisation rules of {@link vqaAccuracy}. */
export type VqaRules = "vqav2" | "textvqa" | "official";

/** The VQA accuracy of one prediction against its human answers (usually 10). */
export function vqaAccuracy(
  prediction: string,
  answers: readonly string[],
  rules: VqaRules = "vqav2",
): number {
  if (answers.length === 0) return 0;
  let pred: string, refs: string[];
  if (rules === "textvqa") {
    pred = evalAiNormalize(prediction);
    refs = answers.map(evalAiNormalize);
  } else if (rules === "vqav2") {
    pred = vqaNormalize(prediction);
    refs = answers.map((a) => vqaNormalize(a));
  } else {
    pred = processDigitArticle(
      processPunctuation(stripWhitespace(prediction), "official"),
      "official",
    );
    refs = answers.map(stripWhitespace);
    if (new Set(refs).size > 1) refs = refs.map((a) => processPunctuation(a, "official"));
  }
  let sum = 0;
  for (let i = 0; i < refs.length; i++) {
    let matching = 0;
    for (let j = 0; j < refs.length; j++) if (j !== i && refs[j] === pred) matching++;
    sum += Math.min(1, matching / 3);
  }
  return sum / refs.length;
}
