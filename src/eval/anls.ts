// ANLS, Average Normalized Levenshtein Similarity (DocVQA, InfographicVQA; Biten et al. 2019,
// as lmms-eval's `anls` computes it): for each reference a, with a′ and p′ the lower-cased,
// stripped, whitespace-collapsed strings,
//   NL(a) = Levenshtein(a′, p′) / max(len(a), len(p))     (lengths of the raw strings, the
//                                                         reference's quirk; 0 if both empty)
//   s = 1 − min_a NL(a);  s < τ (0.5) → 0
// and the task score is the mean of s over questions. Lengths and edits count code points
// (the lengths after upper-casing, as the reference measures them).

/** Levenshtein distance with unit costs over code points. */
export function levenshtein(a: string, b: string): number {
  let s = [...a], t = [...b];
  if (s.length < t.length) [s, t] = [t, s];
  // One row over the shorter string.
  let prev = Array.from({ length: t.length + 1 }, (_, j) => j);
  for (let i = 1; i <= s.length; i++) {
    const cur = [i];
    for (let j = 1; j <= t.length; j++) {
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (s[i - 1] === t[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[t.length];
}

const squash = (s: string) => s.trim().toLowerCase().split(/\s+/).filter(Boolean).join(" ");
// Python's len(s.upper()) of the reference: code points after upper-casing (ß → SS).
const codePoints = (s: string) => [...s.toUpperCase()].length;

/** The ANLS of one prediction against its references (threshold τ, default 0.5). */
export function anls(prediction: string, answers: readonly string[], threshold = 0.5): number {
  if (answers.length === 0) return 0;
  const p = squash(prediction);
  let best = Infinity;
  for (const a of answers) {
    const len = Math.max(codePoints(a), codePoints(prediction));
    best = Math.min(best, len === 0 ? 0 : levenshtein(squash(a), p) / len);
  }
  const s = 1 - best;
  return s < threshold ? 0 : s;
}
