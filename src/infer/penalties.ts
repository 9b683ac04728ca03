// OpenAI-style frequency and presence penalties over the tokens generated so far (the prompt is
// not counted, unlike the HF repetition penalty in sampling.ts):
//
//   logit[j] −= count[j] · frequency + (count[j] > 0 ? presence : 0)

/** Counts of generated tokens, for {@link applyCountPenalties}. */
export type TokenCounts = Map<number, number>;

/** Add one occurrence of `token` to `counts`. */
export function countToken(counts: TokenCounts, token: number): void {
  counts.set(token, (counts.get(token) ?? 0) + 1);
}

/** Apply the frequency / presence penalties in place. */
export function applyCountPenalties(
  logits: Float32Array,
  counts: TokenCounts,
  frequency: number,
  presence: number,
): void {
  if (frequency === 0 && presence === 0) return;
  for (const [id, n] of counts) {
    if (id < 0 || id >= logits.length || n === 0) continue;
    logits[id] -= n * frequency + presence;
  }
}
