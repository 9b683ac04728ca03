// Relaxed accuracy (ChartQA; Methani et al. 2020, as lmms-eval's chartqa `relaxed_correctness`
// computes it): when both prediction and target parse as numbers (Python float(); a trailing
// "%" divides by 100) and the target is non-zero, correct iff |p − t| / |t| ≤ 5%; otherwise the
// lower-cased strings must be equal. A target of 0 therefore needs the exact string.

/** Python's float() of a string: decimal or exponent notation, inf/nan, "_" between digits. */
export function pythonFloat(text: string): number | undefined {
  const s = text.trim();
  const d = String.raw`\d(?:_?\d)*`;
  const num = new RegExp(String.raw`^[+-]?(?:${d}\.(?:${d})?|\.${d}|${d})(?:[eE][+-]?${d})?$`);
  if (num.test(s)) return Number(s.replaceAll("_", ""));
  const w = s.toLowerCase().match(/^([+-]?)(inf|infinity|nan)$/);
  if (w) return w[2] === "nan" ? NaN : (w[1] === "-" ? -Infinity : Infinity);
  return undefined;
}

function toFloat(text: string): number | undefined {
  if (text.endsWith("%")) {
    const v = pythonFloat(text.replace(/%+$/, ""));
    return v === undefined ? undefined : v / 100;
  }
  return pythonFloat(text);
}

/** 1 when `prediction` is within `tolerance` (relative) of `target`, see the module docs. */
export function relaxedCorrectness(prediction: string, target: string, tolerance = 0.05): number {
  const p = toFloat(prediction), t = toFloat(target);
  // A NaN target is truthy in Python: it takes this branch and scores 0.
  if (p !== undefined && t !== undefined && t !== 0) {
    return Math.abs(p - t) / Math.abs(t) <= tolerance ? 1 : 0;
  }
  return prediction.toLowerCase() === target.toLowerCase() ? 1 : 0;
}

/** Relaxed accuracy against several targets: the best one. */
export function relaxedAccuracy(prediction: string, answers: readonly string[], tolerance = 0.05) {
  return answers.some((a) => relaxedCorrectness(prediction, a, tolerance) === 1) ? 1 : 0;
}
