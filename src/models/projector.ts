// Vision → text projector: pixel shuffle (space-to-depth) → Linear without bias → optional
// LayerNorm (the V1 layout).
//
//   x [B, s·s, Dv] → pixelShuffle(r) → [B, (s'/r)², r²·Dv] → proj → [B, tokens, Dt] (→ norm)
//
// s' = ⌊s/r⌋·r: a grid that r does not divide is cropped to its top-left s'×s' patches (with a
// warning; the original project rejected such grids). Factor "auto" picks the smallest r ≥ 2 that
// divides the grid. Parameters: "proj.weight" [Dt, r²·Dv], "norm.weight", "norm.bias" [Dt].

import { pixelShuffle, type Tensor, tidy } from "../tensor/mod.ts";
import { LayerNorm } from "../nn/norm.ts";
import { Linear } from "../nn/linear.ts";
import { Module } from "../nn/module.ts";
import type { ProjectorConfig } from "./configs.ts";
import type { Tap } from "./siglip.ts";

/** The pixel-shuffle factor for a patch grid of side `grid` ("auto": smallest divisor ≥ 2). */
export function resolveFactor(factor: number | "auto", grid: number): number {
  if (factor !== "auto") {
    if (!Number.isInteger(factor) || factor < 1) {
      throw new Error(`pixel shuffle factor ${factor} is invalid`);
    }
    if (factor > grid) {
      throw new Error(
        `pixel shuffle factor ${factor} is larger than the ${grid}×${grid} patch grid`,
      );
    }
    return factor;
  }
  for (let r = 2; r <= grid; r++) if (grid % r === 0) return r;
  throw new Error(`pixel shuffle factor "auto": a ${grid}×${grid} patch grid has no factor ≥ 2`);
}

/** Image tokens one image produces: (⌊s/r⌋)². */
export function imageTokensPerImage(grid: number, factor: number): number {
  return Math.floor(grid / factor) ** 2;
}

/** Pixel shuffle + Linear (+ LayerNorm). */
export class Projector extends Module {
  readonly factor: number;
  readonly proj: Linear;
  readonly norm: LayerNorm | null;
  #warned = false;

  /** `grid`: patches per side of the vision tower's output. */
  constructor(readonly config: ProjectorConfig, readonly grid: number) {
    super();
    this.factor = resolveFactor(config.factor, grid);
    const inF = config.visionHiddenSize * this.factor * this.factor;
    this.proj = this.child("proj", new Linear(inF, config.textHiddenSize, false));
    this.norm = config.layerNorm
      ? this.child("norm", new LayerNorm(config.textHiddenSize, config.layerNormEps))
      : null;
  }

  /** Image tokens per image. */
  get tokensPerImage(): number {
    return imageTokensPerImage(this.grid, this.factor);
  }

  /** x: [B, s·s, Dv] → [B, tokensPerImage, Dt]. */
  forward(x: Tensor, tap?: Tap): Tensor {
    const [, n, d] = x.shape;
    if (n !== this.grid * this.grid || d !== this.config.visionHiddenSize) {
      throw new Error(
        `projector: vision features ${x.describe()} do not match the ${this.grid}×${this.grid} ` +
          `grid of width ${this.config.visionHiddenSize}`,
      );
    }
    if (this.grid % this.factor !== 0 && !this.#warned) {
      this.#warned = true;
      const kept = Math.floor(this.grid / this.factor) * this.factor;
      console.warn(
        `siqvl: pixel shuffle factor ${this.factor} does not divide the ${this.grid}×${this.grid} ` +
          `patch grid; using its top-left ${kept}×${kept} patches (${this.tokensPerImage} image ` +
          `token${this.tokensPerImage === 1 ? "" : "s"})`,
      );
    }
    return tidy(() => {
      const shuffled = pixelShuffle(x, this.factor);
      tap?.("projector.pixel_shuffled", shuffled);
      const y = this.proj.forward(shuffled);
      return this.norm ? this.norm.forward(y) : y;
    });
  }
}
