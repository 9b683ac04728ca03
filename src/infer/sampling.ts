// Choosing the next token from one row of last-position logits, on the CPU (the logits of a
// step are read back once anyway). Order as in Hugging Face generate: repetition penalty →
// temperature → top-k → top-p → draw.

/** Token-choice settings. */
export interface SamplingOptions {
  /** Draw from the distribution (false: greedy argmax). */
  doSample?: boolean;
  /** Divides the logits before sampling (default 1). */
  temperature?: number;
  /** Keep the k most likely tokens (0 or undefined: all). */
  topK?: number;
  /** Keep the smallest set of most likely tokens whose probability reaches p (1: all). */
  topP?: number;
  /**
   * HF repetition penalty over every token already in the row (prompt included): a positive
   * logit is divided by it, a negative one multiplied (1: off).
   */
  repetitionPenalty?: number;
}

/** Apply the repetition penalty in place to the tokens in `seen`. */
export function applyRepetitionPenalty(
  logits: Float32Array,
  seen: Iterable<number>,
  penalty: number,
): void {
  if (penalty === 1) return;
  for (const id of new Set(seen)) {
    if (id < 0 || id >= logits.length) continue;
    const l = logits[id];
    logits[id] = l < 0 ? l * penalty : l / penalty;
  }
}

/** Index of the largest value (the first one on ties, as torch.argmax). */
export function argmax(x: Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

/** log-softmax of a row, in f64 accumulation. */
export function logSoftmax(x: Float32Array): Float32Array {
  let m = -Infinity;
  for (let i = 0; i < x.length; i++) if (x[i] > m) m = x[i];
  let s = 0;
  for (let i = 0; i < x.length; i++) s += Math.exp(x[i] - m);
  const lse = m + Math.log(s);
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = x[i] - lse;
  return out;
}

/**
 * The next token for one row. `logits` is modified (penalty, temperature). `random` draws
 * uniforms in [0, 1) (seeded by the caller).
 */
export function chooseToken(
  logits: Float32Array,
  seen: Iterable<number>,
  opts: SamplingOptions,
  random: () => number,
): number {
  applyRepetitionPenalty(logits, seen, opts.repetitionPenalty ?? 1);
  if (!opts.doSample) return argmax(logits);
  const temp = opts.temperature ?? 1;
  if (!(temp > 0)) {
    throw new Error(`temperature ${temp} must be > 0 when sampling (use greedy instead)`);
  }
  // Candidates: every token with a non-negligible probability, sorted by logit.
  let m = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > m) m = logits[i];
  const floor = m - 40 * temp; // exp(-40) relative probability: invisible in f32 sums
  const cand: number[] = [];
  for (let i = 0; i < logits.length; i++) if (logits[i] >= floor) cand.push(i);
  cand.sort((a, b) => logits[b] - logits[a] || a - b);
  const k = opts.topK && opts.topK > 0 ? Math.min(opts.topK, cand.length) : cand.length;
  const probs = new Float64Array(k);
  let total = 0;
  for (let j = 0; j < k; j++) total += probs[j] = Math.exp((logits[cand[j]] - m) / temp);
  let keep = k;
  const p = opts.topP ?? 1;
  if (p < 1) {
    let cum = 0;
    for (let j = 0; j < k; j++) {
      cum += probs[j] / total;
      if (cum >= p) {
        keep = j + 1;
        break;
      }
    }
  }
  let mass = 0;
  for (let j = 0; j < keep; j++) mass += probs[j];
  let u = random() * mass;
  for (let j = 0; j < keep; j++) {
    u -= probs[j];
    if (u < 0) return cand[j];
  }
  return cand[keep - 1];
}
