// GRPO (stage 4 --rl grpo): group-normalised advantages and the clipped policy-gradient objective
// with an optional KL penalty to the reference, as f64 functions of per-token log-probs.
//
// Following TRL's GRPOTrainer (huggingface/trl, restated, not copied):
//   rewards     r_i = Σ_k w_k · reward_k(completion i)   (w_k = 1 unless given)
//   advantages  A_i = r_i − mean_g(r)  over the G = --num_generations completions of prompt g,
//               divided by (std_g(r) + 1e-4) when scale_rewards is "group" (TRL's default; std is
//               torch's unbiased std), by the batch std for "batch", not at all for "none"
//   per token   ratio = exp(logp − logp_old), clipped to [1 − ε, 1 + ε_high] (ε_high = ε default)
//               ℓ_t = −min(ratio·A, clip(ratio)·A) + β·KL_t,
//               KL_t = exp(logp_ref − logp) − (logp_ref − logp) − 1 (the k3 estimator, ≥ 0)
//   aggregation "dapo" (TRL's default): Σ_t ℓ_t / (completion tokens in the batch);
//               "grpo": mean over completions of (Σ_t ℓ_t / |completion|);
//               "dr_grpo": Σ_t ℓ_t / (completions · max_completion_length)
//   defaults    ε = 0.2, β = 0 (no reference pass), G = 8, temperature 1, top-p 1,
//               max_completion_length 256
// With one optimisation step per generation batch (TRL's num_iterations = 1) logp_old is the
// policy's own detached logp, so ratio = 1 and the gradient is −A·∇logp / count.
// Logged (TRL's names): clip_ratio (tokens whose ratio was clipped where it binds: ratio < 1−ε
// with A < 0, or > 1+ε_high with A > 0), kl (token mean of KL_t, when β > 0 or a reference is
// given).

/** How advantages are scaled. */
export type RewardScaling = "group" | "batch" | "none";
/** How per-token losses are averaged. */
export type GrpoLossType = "dapo" | "grpo" | "dr_grpo";
export const GRPO_LOSS_TYPES: readonly GrpoLossType[] = ["dapo", "grpo", "dr_grpo"];

/** GRPO hyper-parameters (defaults in GRPO_DEFAULTS, as TRL's GRPOConfig). */
export interface GrpoConfig {
  numGenerations: number;
  epsilon: number;
  epsilonHigh: number;
  beta: number;
  scaleRewards: RewardScaling;
  lossType: GrpoLossType;
  maxCompletionLength: number;
  temperature: number;
  topP: number;
}

export const GRPO_DEFAULTS: GrpoConfig = {
  numGenerations: 8,
  epsilon: 0.2,
  epsilonHigh: 0.2,
  beta: 0,
  scaleRewards: "group",
  lossType: "dapo",
  maxCompletionLength: 256,
  temperature: 1,
  topP: 1,
};

/** Advantages and group statistics of a batch of rewards (prompt-major: G per prompt). */
export interface Advantages {
  advantages: Float64Array;
  /** Mean over groups of the within-group std (TRL's reward_std). */
  rewardStd: number;
  /** Share of groups whose rewards are all equal (they teach nothing). */
  fracZeroStd: number;
}

function meanStd(x: ArrayLike<number>, a: number, b: number): [number, number] {
  let m = 0;
  for (let i = a; i < b; i++) m += x[i];
  m /= b - a;
  let v = 0;
  for (let i = a; i < b; i++) v += (x[i] - m) ** 2;
  return [m, b - a > 1 ? Math.sqrt(v / (b - a - 1)) : 0];
}

/** Group-normalised advantages (see the file header). */
export function groupAdvantages(
  rewards: ArrayLike<number>,
  groupSize: number,
  scale: RewardScaling = "group",
): Advantages {
  const n = rewards.length;
  if (!(groupSize >= 1 && Number.isInteger(groupSize)) || n % groupSize !== 0) {
    throw new Error(`GRPO: ${n} rewards do not form groups of --num_generations ${groupSize}`);
  }
  const adv = new Float64Array(n);
  const groups = n / groupSize;
  const [, batchStd] = meanStd(rewards, 0, n);
  let stdSum = 0, zero = 0;
  for (let g = 0; g < groups; g++) {
    const a = g * groupSize, b = a + groupSize;
    const [m, s] = meanStd(rewards, a, b);
    stdSum += s;
    if (s === 0) zero++;
    const div = scale === "group" ? s + 1e-4 : scale === "batch" ? batchStd + 1e-4 : 1;
    for (let i = a; i < b; i++) adv[i] = (rewards[i] - m) / div;
  }
  return { advantages: adv, rewardStd: stdSum / groups, fracZeroStd: zero / groups };
}

/** Per-token inputs of the GRPO objective (all [tokens], completion-major). */
export interface GrpoTokens {
  /** Current policy log-probs of the sampled tokens. */
  logp: ArrayLike<number>;
  /** Log-probs under the policy that sampled them (default: logp, i.e. on-policy). */
  oldLogp?: ArrayLike<number>;
  /** Reference log-probs (needed when β > 0). */
  refLogp?: ArrayLike<number>;
  /** Completion index of each token. */
  seq: ArrayLike<number>;
  /** Advantage of each completion. */
  advantages: ArrayLike<number>;
}

/** The GRPO loss, dLoss/dlogp per token, and metrics. */
export interface GrpoLossResult {
  loss: number;
  dLogp: Float64Array;
  metrics: { clip_ratio: number; kl?: number };
}

/** The clipped GRPO objective (see the file header). */
export function grpoLoss(
  cfg: Pick<GrpoConfig, "epsilon" | "epsilonHigh" | "beta" | "lossType" | "maxCompletionLength">,
  x: GrpoTokens,
): GrpoLossResult {
  const n = x.logp.length;
  const S = x.advantages.length;
  if (x.seq.length !== n) throw new Error(`GRPO: seq has ${x.seq.length} entries, not ${n}`);
  if (cfg.beta > 0 && !x.refLogp) throw new Error("GRPO: --beta > 0 needs reference log-probs");
  const len = new Float64Array(S);
  for (let t = 0; t < n; t++) len[x.seq[t]]++;
  // weight of token t in the aggregate
  const wOf = (t: number): number => {
    switch (cfg.lossType) {
      case "dapo":
        return 1 / n;
      case "grpo":
        return 1 / (len[x.seq[t]] * S);
      case "dr_grpo":
        return 1 / (S * cfg.maxCompletionLength);
    }
  };
  const lo = 1 - cfg.epsilon, hi = 1 + cfg.epsilonHigh;
  const d = new Float64Array(n);
  let loss = 0, clipped = 0, kl = 0;
  for (let t = 0; t < n; t++) {
    const a = x.advantages[x.seq[t]];
    const lp = x.logp[t];
    const ratio = Math.exp(lp - (x.oldLogp ? x.oldLogp[t] : lp));
    const clip = Math.min(Math.max(ratio, lo), hi);
    const un = ratio * a, cl = clip * a;
    // −min(un, cl): the unclipped branch carries the gradient d(ratio)/dlogp = ratio
    let l = -Math.min(un, cl), g = un <= cl ? -ratio * a : 0;
    if ((ratio < lo && a < 0) || (ratio > hi && a > 0)) clipped++;
    if (x.refLogp) {
      const dr = x.refLogp[t] - lp;
      const k = Math.exp(dr) - dr - 1;
      kl += k / n;
      if (cfg.beta > 0) {
        l += cfg.beta * k;
        g += cfg.beta * (1 - Math.exp(dr));
      }
    }
    const w = wOf(t);
    loss += w * l;
    d[t] = w * g;
  }
  const metrics: GrpoLossResult["metrics"] = { clip_ratio: n ? clipped / n : 0 };
  if (x.refLogp) metrics.kl = kl;
  return { loss, dLogp: d, metrics };
}
