// Yes/no accuracy with precision, recall, F1 and yes-ratio of the "yes" class (POPE; Li et al.
// 2023). How a free-text prediction becomes yes or no:
//   exact  lmms-eval's pope_process_results: lower-cased and stripped, it is "yes" only when it
//          equals "yes" (anything else counts as a "no" answer)
//   pope   the POPE repository's evaluate.py (also LLaVA's eval_pope.py): keep the text before
//          the first ".", delete ",", split on spaces; "no" when the words include "No", "no"
//          or "not", else "yes"
// Precision = TP / (TP + FP), recall = TP / (TP + FN) with "yes" as the positive class; a zero
// denominator gives 0. F1 = 2PR / (P + R) (0 when both are 0). yes_ratio = predicted-yes share.

/** Yes/no parsing rules. */
export type YesNoRules = "exact" | "pope";

/** The prediction read as "yes" or "no". */
export function parseYesNo(prediction: string, rules: YesNoRules = "exact"): "yes" | "no" {
  if (rules === "exact") return prediction.toLowerCase().trim() === "yes" ? "yes" : "no";
  let text = prediction;
  const dot = text.indexOf(".");
  if (dot >= 0) text = text.slice(0, dot);
  const words = text.replaceAll(",", "").split(" ");
  return words.includes("No") || words.includes("no") || words.includes("not") ? "no" : "yes";
}

/** The reference answer read as yes/no; anything else is an error naming the value. */
export function referenceYesNo(answer: string): "yes" | "no" {
  const a = answer.toLowerCase().trim();
  if (a !== "yes" && a !== "no") throw new Error(`yes/no reference "${answer}" is not yes or no`);
  return a;
}

/** Aggregate yes/no statistics. */
export interface YesNoStats {
  accuracy: number;
  precision: number;
  recall: number;
  f1: number;
  yes_ratio: number;
}

/** Statistics over (predicted, reference) pairs. */
export function yesNoStats(
  pairs: readonly { pred: "yes" | "no"; ref: "yes" | "no" }[],
): YesNoStats {
  let tp = 0, fp = 0, fn = 0, tn = 0;
  for (const { pred, ref } of pairs) {
    if (pred === "yes") ref === "yes" ? tp++ : fp++;
    else ref === "yes" ? fn++ : tn++;
  }
  const n = pairs.length;
  const precision = tp + fp ? tp / (tp + fp) : 0;
  const recall = tp + fn ? tp / (tp + fn) : 0;
  return {
    accuracy: n ? (tp + tn) / n : 0,
    precision,
    recall,
    f1: precision + recall ? (2 * precision * recall) / (precision + recall) : 0,
    yes_ratio: n ? (tp + fp) / n : 0,
  };
}
