// Generation refuses logits it cannot trust: a NaN or ±Inf in the last-position logits [B, V]
// (read back once per step anyway) stops greedy decoding, sampling and beam search alike with an
// error that names the likely causes, instead of emitting token 0 or a random token.

/** Where non-finite logits came from, for the message. */
export interface LogitsWhere {
  /** "prefill" or "decode step N". */
  phase: string;
  /** Vocabulary size V (row length). */
  vocab: number;
  /** Whether the prompt carried pixel values (the image path is then a suspect). */
  withImage: boolean;
}

/** Throws when `logits` ([B, V], row-major) holds a NaN or an infinity. */
export function assertFiniteLogits(logits: Float32Array, where: LogitsWhere): void {
  for (let i = 0; i < logits.length; i++) {
    const x = logits[i];
    if (x - x === 0) continue; // finite
    const row = Math.floor(i / where.vocab);
    let bad = 0;
    for (let j = i; j < logits.length; j++) if (!Number.isFinite(logits[j])) bad++;
    const causes = [
      "the model weights contain NaN/Inf (a diverged or damaged checkpoint: check it with a " +
      "finite-weights scan, or load an earlier checkpoint)",
    ];
    if (where.withImage) {
      causes.push(
        "the pixel values are not finite or not normalised as the vision tower expects " +
          "(image_mean / image_std / rescale_factor in preprocessor_config.json)",
      );
    }
    throw new Error(
      `generate: non-finite logits at ${where.phase} (row ${row}, token id ${i % where.vocab} ` +
        `is ${x}; ${bad} non-finite values in all). Likely cause: ${causes.join("; or ")}`,
    );
  }
}
