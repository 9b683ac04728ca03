// Beam search (deterministic), Hugging Face style: numBeams live beams per prompt scored by the
// sum of token log-probabilities; at each step the 2·numBeams best (beam, token) continuations
// are ranked, a stop token among the first numBeams closes a hypothesis scored
// sum / length^lengthPenalty (length = new tokens incl. the stop token), the others fill the
// beams. A prompt is finished when numBeams hypotheses exist and (earlyStopping, or) no live beam
// can still beat the worst of them; at max_new_tokens the live beams join the hypotheses.

import type { SiqvlModel } from "../models/siqvl.ts";
import {
  decodeStep,
  disposeState,
  type GenerateInput,
  type GenerateOptions,
  type GenerateResult,
  prefill,
  reorderState,
  resolveIds,
} from "./decode.ts";
import { applyRepetitionPenalty, logSoftmax } from "./sampling.ts";

interface Beam {
  tokens: number[];
  score: number;
}

interface Hypothesis {
  tokens: number[];
  score: number;
  stopped: boolean;
}

interface Candidate {
  score: number;
  beam: number;
  token: number;
}

// The n best (score, beam, token) over several rows of log-probs, best first.
function topCandidates(
  rows: { lp: Float32Array; base: number; beam: number }[],
  n: number,
): Candidate[] {
  const best: Candidate[] = [];
  let floor = -Infinity;
  for (const { lp, base, beam } of rows) {
    for (let v = 0; v < lp.length; v++) {
      const s = base + lp[v];
      if (best.length === n && s <= floor) continue;
      let i = best.length;
      while (i > 0 && best[i - 1].score < s) i--;
      best.splice(i, 0, { score: s, beam, token: v });
      if (best.length > n) best.pop();
      if (best.length === n) floor = best[n - 1].score;
    }
  }
  return best;
}

/** Beam search over a batch of prompts; returns the best hypothesis of each. */
export async function beamSearch(
  model: SiqvlModel,
  input: GenerateInput,
  opts: GenerateOptions,
): Promise<GenerateResult> {
  const k = opts.numBeams ?? 1;
  if (opts.doSample) {
    throw new Error("beam search does not sample: set doSample false or numBeams 1");
  }
  const maxNew = opts.maxNewTokens ?? 64;
  const lp = opts.lengthPenalty ?? 1;
  const penalty = opts.repetitionPenalty ?? 1;
  const { stop, pad } = resolveIds(model, opts);
  const stopSet = new Set(stop);
  const b = input.inputIds.length;
  const vocab = model.config.text.vocabSize;
  const t0 = performance.now();
  const { state, logits: first } = await prefill(model, input, maxNew, pad);
  const t1 = performance.now();
  const beams: Beam[][] = input.inputIds.map(() => [{ tokens: [], score: 0 }]);
  const hyps: Hypothesis[][] = input.inputIds.map(() => []);
  const done = new Array<boolean>(b).fill(false);
  const norm = (score: number, len: number) => score / len ** lp;
  let logits = first;
  let rowsPer = 1; // cache rows per prompt: 1 after the prefill, k afterwards
  let steps = 0;
  try {
    for (let step = 0; step < maxNew; step++) {
      const parents: number[] = [];
      const next: number[] = [];
      for (let p = 0; p < b; p++) {
        if (done[p]) {
          for (let j = 0; j < k; j++) {
            parents.push(p * rowsPer);
            next.push(pad);
          }
          continue;
        }
        const rows = beams[p].map((beam, j) => {
          const row = logits.slice((p * rowsPer + j) * vocab, (p * rowsPer + j + 1) * vocab);
          applyRepetitionPenalty(row, [...input.inputIds[p], ...beam.tokens], penalty);
          return { lp: logSoftmax(row), base: beam.score, beam: j };
        });
        const cands = topCandidates(rows, 2 * k);
        const fresh: Beam[] = [];
        cands.forEach((c, rank) => {
          if (fresh.length === k) return;
          const tokens = [...beams[p][c.beam].tokens, c.token];
          if (stopSet.has(c.token)) {
            if (rank < k) {
              hyps[p].push({ tokens, score: norm(c.score, tokens.length), stopped: true });
            }
            return;
          }
          fresh.push({ tokens, score: c.score });
          parents.push(p * rowsPer + c.beam);
          next.push(c.token);
        });
        hyps[p].sort((x, y) => y.score - x.score);
        hyps[p].length = Math.min(hyps[p].length, k);
        beams[p] = fresh;
        if (hyps[p].length === k) {
          const worst = hyps[p][k - 1].score;
          if (opts.earlyStopping || norm(fresh[0].score, step + 1) <= worst) done[p] = true;
        }
        // Keep k rows per prompt even if fewer beams survived (never with a real vocabulary).
        while (parents.length < (p + 1) * k) {
          parents.push(p * rowsPer);
          next.push(pad);
        }
      }
      if (done.every((d) => d) || step === maxNew - 1) break;
      reorderState(state, parents);
      rowsPer = k;
      logits = await decodeStep(model, state, next, step);
      steps++;
    }
  } finally {
    disposeState(state);
  }
  const tokens = hyps.map((h, p) => {
    const all = done[p] ? h : [
      ...h,
      ...beams[p].map((x) => ({
        tokens: x.tokens,
        score: norm(x.score, x.tokens.length),
        stopped: false,
      })),
    ];
    all.sort((x, y) => y.score - x.score);
    return all[0];
  });
  const t2 = performance.now();
  return {
    tokens: tokens.map((h) => h.tokens),
    finishReasons: tokens.map((h) => (h.stopped ? "stop" : "length")),
    stats: {
      promptTokens: input.inputIds.reduce((s, r) => s + r.length, 0),
      prefillSeconds: (t1 - t0) / 1000,
      decodeSteps: steps,
      decodeSeconds: (t2 - t1) / 1000,
    },
  };
}
