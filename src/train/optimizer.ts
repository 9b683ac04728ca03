// AdamW over named f32 parameters with two groups — decayed (ndim >= 2: weight matrices,
// embeddings, LoRA A/B) and not decayed (ndim < 2: biases, norm weights) — and global-norm
// gradient clipping computed on the GPU:
//
//   sumsq = Σ_params Σ g²                      (sumOfSquares, one scalar on the GPU)
//   coef  = [min(1, max_norm / (√sumsq + 1e-6)), finite(sumsq) ? 1 : 0]   (clipCoefficient)
//   per parameter: adamwStep(p, g, m, v, hp, coef)   — scales g by coef[0] and skips the whole
//   update when coef[1] == 0 (non-finite gradients), all without a readback.
//
// Update (torch.optim.AdamW): t = step + 1; m = β1 m + (1−β1) g; v = β2 v + (1−β2) g²;
// p = p·(1 − lr·wd); p = p − lr/(1−β1^t) · m / (√v/√(1−β2^t) + ε).
//
// The moments live on the GPU as f32 tensors beside each parameter; `exportState()` reads them
// back for a checkpoint and `importState()` uploads them on resume.

import { adamwStep, clipCoefficient } from "../tensor/ops/optim.ts";
import { sumOfSquares, zeros } from "../tensor/ops/elementwise.ts";
import { keep, type Tensor } from "../tensor/tensor.ts";

/** AdamW hyper-parameters (lr comes per step from the schedule). */
export interface AdamWConfig {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** Global-norm clipping threshold; 0 or Infinity = no clipping (the norm is still measured). */
  maxGradNorm: number;
}

/** Defaults of the original trainer (HF Trainer AdamW, wd 0.01, clip 1.0). */
export const ADAMW_DEFAULTS: AdamWConfig = {
  beta1: 0.9,
  beta2: 0.999,
  eps: 1e-8,
  weightDecay: 0.01,
  maxGradNorm: 1.0,
};

/** One trainable tensor with its moments and weight-decay group. */
export interface ParamState {
  name: string;
  param: Tensor;
  m: Tensor;
  v: Tensor;
  decay: boolean;
}

/** What one update left on the GPU (read only when logging). */
export interface UpdateResult {
  /** [] Σ g² over all trainable gradients, before clipping. */
  sumsq: Tensor;
  /** [2] = [clip coefficient, finite flag]. */
  coef: Tensor;
}

/** The decay rule: no weight decay for tensors with fewer than two dimensions. */
export function decays(t: Tensor): boolean {
  return t.shape.length >= 2;
}

/** AdamW with decoupled weight decay and GPU-side global-norm clipping. */
export class AdamW {
  readonly config: AdamWConfig;
  readonly params: ParamState[];
  /** Updates applied so far (t − 1 of the next update's bias correction). */
  step = 0;

  constructor(named: [string, Tensor][], config: Partial<AdamWConfig> = {}) {
    this.config = { ...ADAMW_DEFAULTS, ...config };
    if (!named.length) throw new Error("AdamW: no trainable parameters");
    const seen = new Set<string>();
    this.params = named.map(([name, p]) => {
      if (seen.has(name)) throw new Error(`AdamW: parameter "${name}" listed twice`);
      seen.add(name);
      if (p.dtype !== "f32") {
        throw new Error(`AdamW: trainable ${name} is ${p.dtype}; master weights must be f32`);
      }
      if (!p.requiresGrad) throw new Error(`AdamW: ${name} does not require grad`);
      return {
        name,
        param: p,
        m: keep(zeros(p.gpu, p.shape)),
        v: keep(zeros(p.gpu, p.shape)),
        decay: decays(p),
      };
    });
  }

  /** Number of trainable scalars. */
  get numParams(): number {
    return this.params.reduce((s, p) => s + p.param.size, 0);
  }

  /** Names of the tensors without weight decay (biases, norm weights). */
  get noDecayNames(): string[] {
    return this.params.filter((p) => !p.decay).map((p) => p.name);
  }

  /**
   * Clip and update every parameter from its `.grad` with learning rate `lr` (all on the GPU),
   * then drop the gradients. The caller owns the returned tensors (dispose them).
   * Parameters without a gradient this step get zeros (so they still decay, like an all-zero
   * gradient would).
   */
  update(lr: number): UpdateResult {
    const grads: Tensor[] = [];
    const made: Tensor[] = [];
    for (const p of this.params) {
      let g = p.param.grad;
      if (!g) {
        g = zeros(p.param.gpu, p.param.shape);
        made.push(g);
      }
      grads.push(g);
    }
    const sumsq = keep(sumOfSquares(grads));
    const maxNorm = this.config.maxGradNorm > 0 && isFinite(this.config.maxGradNorm)
      ? this.config.maxGradNorm
      : 3e38;
    const coef = keep(clipCoefficient(sumsq, maxNorm));
    const t = this.step + 1;
    this.params.forEach((p, i) => {
      adamwStep(p.param, grads[i], p.m, p.v, {
        lr,
        beta1: this.config.beta1,
        beta2: this.config.beta2,
        eps: this.config.eps,
        weightDecay: p.decay ? this.config.weightDecay : 0,
        step: t,
      }, coef);
    });
    this.step = t;
    for (const g of made) g.dispose();
    this.zeroGrad();
    return { sumsq, coef };
  }

  /** Drop accumulated gradients. */
  zeroGrad(): void {
    for (const p of this.params) {
      if (p.param.grad) {
        p.param.grad.dispose();
        p.param.grad = null;
      }
    }
  }

  /** Moments as named f32 arrays (`exp_avg.{name}`, `exp_avg_sq.{name}`) and the step. */
  async exportState(): Promise<{ step: number; tensors: Map<string, Float32Array> }> {
    const tensors = new Map<string, Float32Array>();
    for (const p of this.params) {
      tensors.set(`exp_avg.${p.name}`, await p.m.readF32());
      tensors.set(`exp_avg_sq.${p.name}`, await p.v.readF32());
    }
    return { step: this.step, tensors };
  }

  /** Restore moments and step saved by `exportState()`; every parameter must be present. */
  importState(step: number, get: (name: string) => Float32Array | undefined): void {
    for (const p of this.params) {
      for (
        const [key, dst] of [[`exp_avg.${p.name}`, p.m], [`exp_avg_sq.${p.name}`, p.v]] as const
      ) {
        const a = get(key);
        if (!a) throw new Error(`optimizer state has no ${key}: was it saved by another setup?`);
        if (a.length !== dst.size) {
          throw new Error(`optimizer state ${key} has ${a.length} values, ${dst.size} expected`);
        }
        dst.write(a);
      }
    }
    if (!Number.isInteger(step) || step < 0) throw new Error(`bad optimizer step ${step}`);
    this.step = step;
  }

  /** Free the moments. */
  dispose(): void {
    for (const p of this.params) {
      p.m.dispose();
      p.v.dispose();
    }
  }
}
