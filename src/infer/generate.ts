// Autoregressive generation: greedy or sampled (temperature / top-k / top-p, seeded), repetition
// penalty, stop ids, max_new_tokens, a batch of prompts of different lengths, per-token
// streaming. numBeams > 1 hands over to beam search (beam.ts).

import type { SiqvlModel } from "../models/siqvl.ts";
import { rng } from "../nn/random.ts";
import { beamSearch } from "./beam.ts";
import {
  decodeStep,
  disposeState,
  type GenerateInput,
  type GenerateOptions,
  type GenerateResult,
  prefill,
  resolveIds,
} from "./decode.ts";
import { chooseToken } from "./sampling.ts";

/** Generate continuations of a batch of prompts. */
export async function generate(
  model: SiqvlModel,
  input: GenerateInput,
  opts: GenerateOptions = {},
): Promise<GenerateResult> {
  if ((opts.numBeams ?? 1) > 1) return beamSearch(model, input, opts);
  const maxNew = opts.maxNewTokens ?? 64;
  const { stop, pad } = resolveIds(model, opts);
  const stopSet = new Set(stop);
  const seed = opts.seed ?? 0;
  if (!(Number.isInteger(seed) && seed >= 0 && seed <= 0xffffffff)) {
    throw new Error(`generate: seed must be an integer in [0, 2^32), got ${seed} (not wrapped)`);
  }
  const random = rng(seed);
  const b = input.inputIds.length;
  const vocab = model.config.text.vocabSize;
  const t0 = performance.now();
  const { state, logits: first } = await prefill(model, input, maxNew, pad);
  const t1 = performance.now();
  const tokens: number[][] = input.inputIds.map(() => []);
  const seen = input.inputIds.map((r) => [...r]);
  const done = new Array<boolean>(b).fill(false);
  const stepLogits: Float32Array[][] | undefined = opts.keepStepLogits
    ? tokens.map(() => [])
    : undefined;
  let logits = first;
  let steps = 0;
  try {
    for (let step = 0; step < maxNew; step++) {
      const next = new Array<number>(b).fill(pad);
      for (let i = 0; i < b; i++) {
        if (done[i]) continue;
        const row = logits.slice(i * vocab, (i + 1) * vocab);
        stepLogits?.[i].push(row.slice());
        const tok = chooseToken(row, seen[i], opts, random);
        next[i] = tok;
        tokens[i].push(tok);
        seen[i].push(tok);
        opts.onToken?.(i, tok, step);
        if (stopSet.has(tok)) done[i] = true;
      }
      if (done.every((d) => d) || step === maxNew - 1) break;
      logits = await decodeStep(model, state, next, step);
      steps++;
    }
  } finally {
    disposeState(state);
  }
  const t2 = performance.now();
  return {
    tokens,
    finishReasons: done.map((d) => (d ? "stop" : "length")),
    stepLogits,
    stats: {
      promptTokens: input.inputIds.reduce((s, r) => s + r.length, 0),
      prefillSeconds: (t1 - t0) / 1000,
      decodeSteps: steps,
      decodeSeconds: (t2 - t1) / 1000,
    },
  };
}
