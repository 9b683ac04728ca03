// Decoding with a KV cache, shared by generate.ts (greedy / sampling) and beam.ts: options and
// result types, the prefill and one decode step.
//
// Prompts are left-padded to a common length T so that every row writes the same cache slot
// each step; the key mask hides the padding and RoPE positions count real tokens only. The images
// are fused into the <|image_pad|> embeddings during the prefill (the cache then carries them).
// Each step reads back the last-position logits [B, V] once; the token choice runs on the CPU.

import { gatherRows, noGrad, Tensor, tidy } from "../tensor/mod.ts";
import type { SiqvlModel } from "../models/siqvl.ts";
import { KVCache } from "./kv_cache.ts";
import type { SamplingOptions } from "./sampling.ts";
import { assertFiniteLogits } from "./finite_logits.ts";

/** Generation settings. */
export interface GenerateOptions extends SamplingOptions {
  /** New tokens per row at most (default 64). */
  maxNewTokens?: number;
  /** A row stops after producing one of these (default: the text config's eos_token_id). */
  stopTokenIds?: number[];
  /** Id used to pad prompts and finished rows (default: pad_token_id, else the first stop id). */
  padTokenId?: number;
  /** Seed of the sampling stream (default 0). */
  seed?: number;
  /** Beam search with this many beams (> 1; greedy scoring, no sampling). */
  numBeams?: number;
  /** Beam search: hypothesis score = sum log-prob / length^lengthPenalty (default 1). */
  lengthPenalty?: number;
  /** Beam search: stop a row as soon as numBeams hypotheses are finished (default false). */
  earlyStopping?: boolean;
  /** Called for every new token of every unfinished row (not for beam search). */
  onToken?: (row: number, token: number, step: number) => void;
  /** Keep the raw logits each token was chosen from (CPU copies, [row][step]). */
  keepStepLogits?: boolean;
}

/** Prompts (token ids, images in the order of their <|image_pad|> runs across all rows). */
export interface GenerateInput {
  inputIds: number[][];
  pixelValues?: Tensor;
  /**
   * The image each <|image_pad|> run shows (an index into pixelValues), so that rows asking
   * about the same image share one vision-tower pass; default: one image per run, in order.
   */
  imageIndex?: number[];
}

/** Output of `generate`. */
export interface GenerateResult {
  /** New tokens of each row (a stop token, when reached, is the last one). */
  tokens: number[][];
  finishReasons: ("stop" | "length")[];
  /** Raw logits per row per step (with keepStepLogits). */
  stepLogits?: Float32Array[][];
  stats: GenerateStats;
}

/** Timings (seconds include the readbacks). */
export interface GenerateStats {
  promptTokens: number;
  prefillSeconds: number;
  decodeSteps: number;
  decodeSeconds: number;
}

/** A prefilled decoding state shared by sampling and beam search. */
export interface DecodeState {
  cache: KVCache;
  /** i32 [B, capacity]: 0 on left padding (and its CPU copy). */
  keyMask: Tensor;
  mask: Int32Array;
  /** Real prompt length of each row. */
  promptLens: number[];
  /** Padded prompt length (the slot of the first new token). */
  paddedLen: number;
}

/** Stop ids and pad id from the options and the text config. */
export function resolveIds(
  model: SiqvlModel,
  opts: GenerateOptions,
): { stop: number[]; pad: number } {
  const eos = model.config.text.eosTokenId;
  const stop = opts.stopTokenIds ?? (eos === undefined ? [] : Array.isArray(eos) ? eos : [eos]);
  const pad = opts.padTokenId ?? model.config.text.padTokenId ?? stop[0] ?? 0;
  return { stop, pad };
}

/**
 * Run the prompts through the model, filling a cache with room for `maxNew` more tokens.
 * Returns the state and the last-position logits [B, V] (CPU).
 */
export async function prefill(
  model: SiqvlModel,
  input: GenerateInput,
  maxNew: number,
  pad: number,
): Promise<{ state: DecodeState; logits: Float32Array }> {
  const rows = input.inputIds;
  const b = rows.length;
  if (b === 0) throw new Error("generate: no prompts");
  const lens = rows.map((r) => r.length);
  if (lens.some((l) => l === 0)) throw new Error("generate: empty prompt");
  const t = Math.max(...lens);
  const cfg = model.config.text;
  const capacity = t + maxNew;
  if (capacity > cfg.maxPositionEmbeddings) {
    throw new Error(
      `generate: ${t} + ${maxNew} positions exceed max_position_embeddings ${cfg.maxPositionEmbeddings}`,
    );
  }
  const ids = new Int32Array(b * t).fill(pad);
  const pos = new Int32Array(b * t);
  const mask = new Int32Array(b * capacity).fill(1);
  rows.forEach((r, i) => {
    const padN = t - r.length;
    ids.set(r, i * t + padN);
    for (let j = 0; j < t; j++) pos[i * t + j] = Math.max(0, j - padN);
    mask.fill(0, i * capacity, i * capacity + padN);
  });
  const gpu = model.gpu;
  const cache = new KVCache(
    gpu,
    cfg.numHiddenLayers,
    b,
    capacity,
    cfg.numKeyValueHeads,
    cfg.headDim,
  );
  const keyMask = Tensor.from(gpu, mask, [b, capacity], "i32");
  const logitsT = noGrad(() =>
    tidy(() => {
      const embeds = model.embedInputs(ids, b, t, input.pixelValues, undefined, input.imageIndex);
      const positions = Tensor.from(gpu, pos, [b, t], "i32");
      const hidden = model.text.forward(embeds, { positions, keyMask, cache });
      return lastPositionLogits(model, hidden);
    })
  );
  cache.advance(t);
  const logits = await logitsT.readF32();
  logitsT.dispose();
  const state = { cache, keyMask, mask, promptLens: lens, paddedLen: t };
  try {
    const withImage = input.pixelValues !== undefined;
    assertFiniteLogits(logits, { phase: "prefill", vocab: logits.length / b, withImage });
  } catch (e) {
    disposeState(state);
    throw e;
  }
  return { state, logits };
}

/** hidden [B, T, H] → logits of the last position [B, V]. */
function lastPositionLogits(model: SiqvlModel, hidden: Tensor): Tensor {
  const [b, t, h] = hidden.shape;
  if (t === 1) return model.text.logits(hidden.view([b, h]));
  const idx = Int32Array.from({ length: b }, (_, i) => i * t + t - 1);
  const last = gatherRows(hidden.view([b * t, h]), Tensor.from(model.gpu, idx, [b], "i32"));
  return model.text.logits(last);
}

/** Feed one token per row (at position promptLen + step); returns the next logits [B, V]. */
export async function decodeStep(
  model: SiqvlModel,
  state: DecodeState,
  tokens: readonly number[],
  step: number,
): Promise<Float32Array> {
  const gpu = model.gpu;
  const b = tokens.length;
  const logitsT = noGrad(() =>
    tidy(() => {
      const ids = Tensor.from(gpu, tokens, [b, 1], "i32");
      const positions = Tensor.from(gpu, state.promptLens.map((l) => l + step), [b, 1], "i32");
      const hidden = model.text.forward(model.text.embed(ids), {
        positions,
        keyMask: state.keyMask,
        cache: state.cache,
      });
      return lastPositionLogits(model, hidden);
    })
  );
  state.cache.advance(1);
  const logits = await logitsT.readF32();
  logitsT.dispose();
  const vocab = logits.length / b;
  assertFiniteLogits(logits, { phase: `decode step ${step}`, vocab, withImage: false });
  return logits;
}

/** Reorder / replicate rows: new row i continues old row parents[i] (beam search). */
export function reorderState(state: DecodeState, parents: readonly number[]): void {
  const cap = state.cache.capacity;
  state.cache.reorder(parents);
  const mask = new Int32Array(parents.length * cap);
  parents.forEach((p, i) => mask.set(state.mask.subarray(p * cap, (p + 1) * cap), i * cap));
  state.keyMask.dispose();
  state.keyMask = Tensor.from(state.cache.gpu, mask, [parents.length, cap], "i32");
  state.mask = mask;
  state.promptLens = parents.map((p) => state.promptLens[p]);
}

/** Release a decoding state. */
export function disposeState(state: DecodeState): void {
  state.cache.dispose();
  state.keyMask.dispose();
}
