// One optimizer step on the GPU, with no readback: forward + backward of every micro-batch of the
// accumulation window, then global-norm clipping and AdamW (optimizer.ts). Per-step statistics
// are copied (GPU → GPU) into a small ring buffer that `drain()` reads back — every
// logging_steps, before a save, at the end — in one mapAsync.
//
// Gradient accumulation: micro-batch i contributes its mean loss L_i over n_i counted targets with
// weight n_i / N, N = Σ n_i over the window (known on the CPU from the labels), so the window's
// loss and gradient are the token-weighted mean over the whole window — the same as one big batch.
//
// Ring entry per step (f32): [window loss, Σ g² (before clipping), clip coefficient, finite flag].

import type { Gpu } from "../gpu/device.ts";
import { addInPlace, fill, zeros } from "../tensor/ops/elementwise.ts";
import { keep, noGrad, type Tensor, tidy } from "../tensor/tensor.ts";
import type { AdamW } from "./optimizer.ts";

/** What the model must offer the step: a loss for a micro-batch. */
export interface LossModel {
  /** Forward with labels: the mean loss [] over `numLossTokens` targets (and tensors to free). */
  lossOf(mb: MicroBatch): { loss: Tensor; numLossTokens: number; dispose?: Tensor[] };
}

/** One collated micro-batch (CPU data, uploaded by the model adapter). */
export interface MicroBatch {
  /** Rows in the batch. */
  numSamples: number;
  /** Real (non-padding) tokens. */
  numTokens: number;
  /** Targets the loss counts (labels ≠ −100 after the shift). */
  numLossTokens: number;
  /** Whatever the model adapter needs (ids, mask, labels, pixels, …). */
  data: unknown;
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
}

const ENTRY = 4;

/** Runs optimizer steps and collects their statistics on the GPU. */
export class StepRunner {
  readonly gpu: Gpu;
  readonly model: LossModel;
  readonly optimizer: AdamW;
  readonly ringSize: number;
  #ring: Tensor;
  #pending: Omit<StepStats, "loss" | "gradNorm" | "clipCoef" | "finite">[] = [];
  #ready: StepStats[] = [];

  constructor(gpu: Gpu, model: LossModel, optimizer: AdamW, ringSize: number) {
    this.gpu = gpu;
    this.model = model;
    this.optimizer = optimizer;
    this.ringSize = Math.max(1, ringSize);
    this.#ring = keep(noGrad(() => zeros(gpu, [this.ringSize * ENTRY])));
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
  async run(step: number, window: MicroBatch[], lr: number): Promise<void> {
    if (!window.length) throw new Error("StepRunner.run: empty accumulation window");
    if (this.#pending.length >= this.ringSize) this.#ready.push(...(await this.#readPending()));
    const total = window.reduce((s, m) => s + m.numLossTokens, 0);
    const lossAcc = keep(noGrad(() => zeros(this.gpu, [])));
    try {
      for (const mb of window) {
        // No counted target anywhere in the window: every micro-batch weighs the same.
        const w = total > 0 ? mb.numLossTokens / total : 1 / window.length;
        tidy(() => {
          const out = this.model.lossOf(mb);
          if (w > 0) {
            noGrad(() => addInPlace(lossAcc, out.loss, w));
            out.loss.backward(fill(this.gpu, [], w));
          }
          for (const t of out.dispose ?? []) t.dispose();
        });
      }
      const { sumsq, coef } = this.optimizer.update(lr);
      const slot = this.#pending.length * ENTRY * 4;
      const ring = this.#ring.storage.buffer;
      this.gpu.copy(lossAcc.storage.buffer, 0, ring, slot, 4);
      this.gpu.copy(sumsq.storage.buffer, 0, ring, slot + 4, 4);
      this.gpu.copy(coef.storage.buffer, 0, ring, slot + 8, 8);
      sumsq.dispose();
      coef.dispose();
    } finally {
      lossAcc.dispose();
    }
    this.#pending.push({
      step,
      lr,
      samples: window.reduce((s, m) => s + m.numSamples, 0),
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
    const raw = new Float32Array(await this.gpu.read(this.#ring.storage.buffer, 0, n * ENTRY * 4));
    const out = this.#pending.map((p, i) => {
      const sumsq = raw[i * ENTRY + 1];
      return {
        ...p,
        loss: raw[i * ENTRY],
        gradNorm: Math.sqrt(sumsq),
        clipCoef: raw[i * ENTRY + 2],
        finite: raw[i * ENTRY + 3] === 1 && Number.isFinite(raw[i * ENTRY]),
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
