// Stage-4 objectives on the GPU (shaders/po_loss.wgsl), so a training step needs no readback:
//
//   preferenceObjective(lp [2B], ref [2B] | null, counts, cfg) → loss [] + 7 statistics []
//     lp: summed label log-probs of the chosen rows (0..B−1) then the rejected rows (B..2B−1)
//   grpoObjective(lp [N], ref [N] | null, advantages, weights, cfg) → loss [] + kl, clip_ratio
//     lp: per-token log-probs of the sampled completion tokens
// The formulas are po_loss.ts's and grpo.ts's (the f64 references the tests compare against).
// Backward: dloss/dlp is computed with the loss and scaled by the upstream gradient.

import type { Gpu } from "../gpu/device.ts";
import { f32 } from "../gpu/device.ts";
import { mul, record, Tensor } from "../tensor/mod.ts";
import type { GrpoConfig } from "./grpo.ts";
import { isReferenceFree, type PoLossConfig } from "./po_loss.ts";

/** Statistics of preferenceObjective, in order (TRL's names). */
export const PREFERENCE_STATS = [
  "rewards/chosen",
  "rewards/rejected",
  "rewards/accuracies",
  "rewards/margins",
  "logps/chosen",
  "logps/rejected",
  "nll_loss",
] as const;

/** Statistics of grpoObjective, in order. */
export const GRPO_OBJECTIVE_STATS = ["kl", "clip_ratio"] as const;

const KIND = { sigmoid: 0, hinge: 1, ipo: 2, simpo: 3, orpo: 4 } as const;

/** The loss (with its backward into lp) and `nStats` statistics from one kernel run. */
function objective(
  entry: "preference" | "grpo",
  lp: Tensor,
  ref: Tensor | null,
  a: Float32Array,
  b: Float32Array | null,
  uniforms: (number | ReturnType<typeof f32>)[],
  nStats: number,
): { loss: Tensor; stats: Tensor[] } {
  const gpu: Gpu = lp.gpu;
  const n = lp.size;
  const aT = Tensor.from(gpu, a, [a.length]);
  const bT = b ? Tensor.from(gpu, b, [b.length]) : null;
  const out = Tensor.empty(gpu, [8]);
  const grad = Tensor.empty(gpu, [n, 1]);
  gpu.dispatch({
    shader: "po_loss",
    entry,
    uniforms,
    bindings: [
      lp.binding(),
      (ref ?? lp).binding(),
      aT.binding(),
      bT?.binding() ?? null, // unused by the preference entry
      out.binding(),
      grad.binding(),
    ],
    workgroups: 1,
    label: `po_loss ${entry}`,
  });
  aT.dispose();
  bT?.dispose();
  const scalar = (k: number) => {
    const t = Tensor.empty(gpu, []);
    gpu.copy(out.storage.buffer, 4 * k, t.storage.buffer, 0, 4);
    return t;
  };
  const loss = scalar(0);
  const stats = Array.from({ length: nStats }, (_, k) => scalar(k + 1));
  out.dispose();
  const res = record(`po_loss ${entry}`, loss, [lp], (g) => {
    const y = mul(grad, g); // [n, 1] ⊙ the upstream scalar
    const v = y.view(lp.shape);
    y.dispose();
    return [v];
  }, [grad]);
  grad.dispose();
  return { loss: res, stats };
}

/** The preference loss of B pairs (see the file header). */
export function preferenceObjective(
  lp: Tensor,
  ref: Tensor | null,
  counts: ArrayLike<number>,
  cfg: PoLossConfig,
): { loss: Tensor; stats: Tensor[] } {
  const n = lp.size;
  if (n % 2 !== 0 || counts.length !== n) {
    throw new Error(`preferenceObjective: ${n} log-probs / ${counts.length} counts for pairs`);
  }
  const needRef = !isReferenceFree(cfg.type);
  if (needRef && (!ref || ref.size !== n)) {
    throw new Error(`preferenceObjective: --po_loss ${cfg.type} needs reference log-probs [${n}]`);
  }
  for (let i = 0; i < n; i++) {
    if (!(counts[i] >= 1)) throw new Error(`preferenceObjective: sequence ${i} has no label token`);
  }
  return objective(
    "preference",
    lp,
    needRef ? ref : null,
    Float32Array.from(counts),
    null,
    [n / 2, KIND[cfg.type], f32(cfg.beta), f32(cfg.labelSmoothing), f32(cfg.simpoGamma), 0],
    PREFERENCE_STATS.length,
  );
}

/** The GRPO objective of N sampled tokens (advantage and aggregation weight per token). */
export function grpoObjective(
  lp: Tensor,
  ref: Tensor | null,
  advantages: Float32Array,
  weights: Float32Array,
  cfg: Pick<GrpoConfig, "epsilon" | "epsilonHigh" | "beta">,
): { loss: Tensor; stats: Tensor[] } {
  const n = lp.size;
  if (advantages.length !== n || weights.length !== n) {
    throw new Error(`grpoObjective: ${n} tokens, ${advantages.length} advantages`);
  }
  if (cfg.beta > 0 && !ref) throw new Error("grpoObjective: --beta > 0 needs reference log-probs");
  return objective(
    "grpo",
    lp,
    ref,
    advantages,
    weights,
    [n, 0, f32(cfg.beta), f32(cfg.epsilon), f32(cfg.epsilonHigh), ref ? 1 : 0],
    GRPO_OBJECTIVE_STATS.length,
  );
}
