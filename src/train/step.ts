// One optimizer step on the GPU, with no readback: forward + backward of every micro-batch of the
// accumulation window, then global-norm clipping and AdamW (optimizer.ts). Per-step statistics
// are copied (GPU → GPU) into a small ring buffer that `drain()` reads back — every
// logging_steps, before a save, at the end — in one mapAsync.
//
// Gradient accumulation: micro-batch i contributes its mean loss L_i over n_i counted targets with
// weight n_i / N, N = Σ n_i over the window (known on the CPU from the labels), so the window's
// loss and gradient are the token-weighted mean over the whole window — the same as one big batch.
//
// Ring entry per step (f32): [window loss, Σ g² (before clipping), clip coefficient, finite flag,
// then the stage's own statistics (e.g. DPO rewards), each the same token-weighted mean].

import type { Gpu } from "../gpu/device.ts";
import { addInPlace, fill, zeros } from "../tensor/ops/elementwise.ts";
import { keep, noGrad, type Tensor, tidy } from "../tensor/tensor.ts";
import type { AdamW } from "./optimizer.ts";

/** What the step needs to know of a micro-batch (the collator's `Batch` has these). */
export interface StepBatch {
  /** Rows. */
  batch: number;
  /** Real (non-padding) tokens. */
  numTokens: number;
  /** Targets the loss counts: micro-batches of a window weigh by it. */
  numLossTokens: number;
}

/** A micro-batch's loss: a scalar [] to minimise, tensors to free, optional statistics. */
export interface LossOutput {
  loss: Tensor;
  dispose?: Tensor[];
  /** Scalars [] in the order of {@link LossModel.statNames} (not differentiated). */
  stats?: Tensor[];
}

/** What the step calls: the loss of a micro-batch. */
export interface LossModel<B extends StepBatch = StepBatch> {
  lossOf(batch: B): LossOutput;
  /** Names of the statistics `lossOf` returns (default none). */
  readonly statNames?: readonly string[];
}

/** Statistics of one step, after `drain()`. */
export interface StepStats {
  step: number;
  loss: number;
  gradNorm: number;
  clipCoef: number;
  finite: boolean;
  lr: number;
  samples: number;
  tokens: number;
  lossTokens: number;
  /** The stage's statistics by name (window means). */
  stats: Record<string, number>;
}

const FIXED = 4;

/** Runs optimizer steps and collects their statistics on the GPU. */
export class StepRunner<B extends StepBatch = StepBatch> {
  readonly gpu: Gpu;
  readonly model: LossModel<B>;
  readonly optimizer: AdamW;
  readonly ringSize: number;
  readonly statNames: readonly string[];
  readonly #entry: number;
  #ring: Tensor;
  #pending: Omit<StepStats, "loss" | "gradNorm" | "clipCoef" | "finite" | "stats">[] = [];
  #ready: StepStats[] = [];

  constructor(gpu: Gpu, model: LossModel<B>, optimizer: AdamW, ringSize: number) {
    this.gpu = gpu;
    this.model = model;
    this.optimizer = optimizer;
    this.ringSize = Math.max(1, ringSize);
    this.statNames = model.statNames ?? [];
    this.#entry = FIXED + this.statNames.length;
    this.#ring = keep(noGrad(() => zeros(gpu, [this.ringSize * this.#entry])));
  }

  /** Steps run since the last drain. */
  get pendingSteps(): number {
    return this.#pending.length;
  }

  /**
   * One optimizer step over `window` (the accumulation micro-batches) with learning rate `lr`,
   * recorded as optimizer step number `step`. Enqueues GPU work only; call `drain()` before the
   * ring fills (the runner drains itself when it must, at the cost of a readback).
   */
  async run(step: number, window: B[], lr: number): Promise<void> {
    if (!window.length) throw new Error("StepRunner.run: empty accumulation window");
    if (this.#pending.length >= this.ringSize) this.#ready.push(...(await this.#readPending()));
    const total = window.reduce((s, m) => s + m.numLossTokens, 0);
    const accs = [...Array(1 + this.statNames.length)].map(() =>
      keep(noGrad(() => zeros(this.gpu, [])))
    );
    try {
      for (const mb of window) {
        // No counted target anywhere in the window: every micro-batch weighs the same.
        const w = total > 0 ? mb.numLossTokens / total : 1 / window.length;
        tidy(() => {
          const out = this.model.lossOf(mb);
          if (w > 0) {
            noGrad(() => {
              addInPlace(accs[0], out.loss, w);
              out.stats?.forEach((t, i) => addInPlace(accs[1 + i], t, w));
            });
            out.loss.backward(fill(this.gpu, [], w));
          }
          for (const t of out.dispose ?? []) t.dispose();
        });
      }
      const { sumsq, coef } = this.optimizer.update(lr);
      const slot = this.#pending.length * this.#entry * 4;
      const ring = this.#ring.storage.buffer;
      this.gpu.copy(accs[0].storage.buffer, 0, ring, slot, 4);
      this.gpu.copy(sumsq.storage.buffer, 0, ring, slot + 4, 4);
      this.gpu.copy(coef.storage.buffer, 0, ring, slot + 8, 8);
      accs.slice(1).forEach((t, i) =>
        this.gpu.copy(t.storage.buffer, 0, ring, slot + 16 + 4 * i, 4)
      );
      sumsq.dispose();
      coef.dispose();
    } finally {
      for (const t of accs) t.dispose();
    }
    this.#pending.push({
      step,
      lr,
      samples: window.reduce((s, m) => s + m.batch, 0),
      tokens: window.reduce((s, m) => s + m.numTokens, 0),
      lossTokens: total,
    });
  }

  /** Statistics of every step run since the last drain, in order (at most one readback). */
  async drain(): Promise<StepStats[]> {
    const out = [...this.#ready, ...(await this.#readPending())];
    this.#ready = [];
    return out;
  }

  async #readPending(): Promise<StepStats[]> {
    const n = this.#pending.length;
    if (!n) return [];
    const E = this.#entry;
    const raw = new Float32Array(await this.gpu.read(this.#ring.storage.buffer, 0, n * E * 4));
    const out = this.#pending.map((p, i) => {
      const sumsq = raw[i * E + 1];
      return {
        ...p,
        loss: raw[i * E],
        gradNorm: Math.sqrt(sumsq),
        clipCoef: raw[i * E + 2],
        finite: raw[i * E + 3] === 1 && Number.isFinite(raw[i * E]),
        stats: Object.fromEntries(this.statNames.map((k, j) => [k, raw[i * E + FIXED + j]])),
      };
    });
    this.#pending = [];
    return out;
  }

  /** Free the ring. */
  dispose(): void {
    this.#ring.dispose();
  }
}
