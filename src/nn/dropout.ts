// Dropout with masks drawn on the CPU from a counter-based seed (seed, module id, step).
//
// The same module in the same step gets the same mask, so a gradient-checkpointed block that is
// re-run during backward sees exactly the mask of its forward. The model advances the step once
// per top-level forward (`nextDropoutStep()`).

import { mul, Tensor } from "../tensor/mod.ts";
import { mixSeed, rng } from "./random.ts";

let globalSeed = 0;
let step = 0;
let nextId = 1;

/** Seed the dropout streams (and restart the step counter). */
export function setDropoutSeed(seed: number): void {
  globalSeed = seed >>> 0;
  step = 0;
}

/** Advance to the next forward pass: new masks everywhere. */
export function nextDropoutStep(): void {
  step++;
}

/** A fresh id for a module that uses dropout. */
export function dropoutId(): number {
  return nextId++;
}

/** Inverted dropout of `x` with probability `p` (identity when p = 0). */
export function dropout(x: Tensor, p: number, id: number): Tensor {
  if (p <= 0) return x;
  if (p >= 1) throw new Error(`dropout probability ${p} must be < 1`);
  const r = rng(mixSeed(globalSeed, id, step));
  const keepScale = 1 / (1 - p);
  const m = new Float32Array(x.size);
  for (let i = 0; i < m.length; i++) m[i] = r() < p ? 0 : keepScale;
  const mask = Tensor.from(x.gpu, m, x.shape, "f32");
  const out = mul(x, mask);
  mask.dispose();
  return out;
}
