// Preference-optimisation losses (stage 4): DPO and relatives as one pure function of per-sequence
// log-probabilities, with analytic gradients.
//
// Inputs per pair i (B pairs): the policy's SUMMED label log-probs ℓc, ℓr of the chosen and the
// rejected completion (sequenceLogProbs, sum mode), their token counts |c|, |r| (≥ 1), and for
// the reference-based losses the reference's sums ℓc⁰, ℓr⁰. ρ = ℓ − ℓ⁰ (log ratio), Δ = ρc − ρr,
// ℓ̄ = ℓ / |·| (per-token average). Every per-pair loss is averaged over the batch.
//
// Formulas and defaults follow TRL (huggingface/trl; DPOTrainer 1.x `_compute_loss`, CPO/SimPO
// and ORPO in trl/experimental; restated, not copied):
//   sigmoid   −(1−ε)·log σ(βΔ) − ε·log σ(−βΔ)           conservative DPO (cDPO; TRL 0.x applied
//             `label_smoothing` ε here; 1.x's plain sigmoid is ε = 0, the default)
//   hinge     max(0, 1 − βΔ)                            RSO / SLiC
//   ipo       (ρc/|c| − ρr/|r| − 1/(2β))²                length-normalised, as TRL (β is IPO's τ)
//   simpo     −(1−ε)·log σ(β(ℓ̄c − ℓ̄r) − γ) − ε·log σ(−(…))    reference-free; TRL CPO loss_type
//             "simpo" with cpo_alpha = 0; γ = `simpo_gamma` (default 0.5)
//   orpo      NLL − β·log σ(log_odds), log_odds = (ℓ̄c − ℓ̄r) − (log(1−e^ℓ̄c) − log(1−e^ℓ̄r)),
//             NLL = −Σℓc / Σ|c| (token mean of the chosen cross-entropy over the batch);
//             reference-free
// β defaults to 0.1 for all (TRL's DPOConfig, CPOConfig and ORPOConfig).
//
// Logged metrics (TRL's names): rewards/chosen = mean β·ρc, rewards/rejected = mean β·ρr,
// rewards/accuracies = mean 1[βρc > βρr], rewards/margins = mean β(ρc − ρr), logps/chosen and
// logps/rejected = mean summed policy logps. For the reference-free losses the rewards are β·ℓ̄
// (TRL's CPO and ORPO), and ORPO adds nll_loss, log_odds_ratio and log_odds_chosen.

/** The preference losses offered by --po_loss. */
export const PO_LOSSES = ["sigmoid", "ipo", "hinge", "simpo", "orpo"] as const;
export type PoLossType = typeof PO_LOSSES[number];

/** Losses that need no reference model. */
export function isReferenceFree(type: PoLossType): boolean {
  return type === "simpo" || type === "orpo";
}

/** Hyper-parameters of a preference loss. */
export interface PoLossConfig {
  type: PoLossType;
  /** β (default 0.1). */
  beta: number;
  /** ε of the smoothed sigmoid / SimPO (default 0). */
  labelSmoothing: number;
  /** SimPO's target margin γ (default 0.5). */
  simpoGamma: number;
}

/** Defaults as TRL has them. */
export const PO_DEFAULTS: Omit<PoLossConfig, "type"> = {
  beta: 0.1,
  labelSmoothing: 0,
  simpoGamma: 0.5,
};

/** Per-pair log-probabilities of one batch (all length B). */
export interface PairLogps {
  chosen: ArrayLike<number>;
  rejected: ArrayLike<number>;
  chosenTokens: ArrayLike<number>;
  rejectedTokens: ArrayLike<number>;
  /** Reference sums (required unless the loss is reference-free). */
  refChosen?: ArrayLike<number>;
  refRejected?: ArrayLike<number>;
}

/** Loss value, its gradient with respect to the policy sums, and the logged metrics. */
export interface PoLossResult {
  loss: number;
  dChosen: Float64Array;
  dRejected: Float64Array;
  metrics: Record<string, number>;
}

/** log σ(z), stable for large |z|. */
export function logSigmoid(z: number): number {
  return z >= 0 ? -Math.log1p(Math.exp(-z)) : z - Math.log1p(Math.exp(z));
}

/** σ(z). */
export function sigmoid(z: number): number {
  return z >= 0 ? 1 / (1 + Math.exp(-z)) : Math.exp(z) / (1 + Math.exp(z));
}

/** log(1 − eˣ) for x < 0, stable on both sides of −ln 2. */
export function log1mexp(x: number): number {
  return x > -Math.LN2 ? Math.log(-Math.expm1(x)) : Math.log1p(-Math.exp(x));
}

/**
 * ORPO needs ℓ̄ < 0 strictly (log(1 − e^0) = −∞); a completion whose average log-prob rounds to
 * 0 is held just below it.
 */
const ORPO_MAX_MEAN_LOGP = -1e-7;

/** Smoothed sigmoid loss of z and its derivative: −(1−ε) log σ(z) − ε log σ(−z). */
function smoothedSigmoid(z: number, eps: number): [number, number] {
  const loss = -(1 - eps) * logSigmoid(z) - eps * logSigmoid(-z);
  return [loss, sigmoid(z) - (1 - eps)];
}

function check(x: PairLogps, needRef: boolean): number {
  const B = x.chosen.length;
  const all: [string, ArrayLike<number> | undefined][] = [
    ["rejected", x.rejected],
    ["chosenTokens", x.chosenTokens],
    ["rejectedTokens", x.rejectedTokens],
  ];
  if (needRef) all.push(["refChosen", x.refChosen], ["refRejected", x.refRejected]);
  for (const [name, a] of all) {
    if (!a) throw new Error(`preference loss: ${name} is required (reference log-probs)`);
    if (a.length !== B) {
      throw new Error(`preference loss: ${name} has ${a.length} entries, not ${B}`);
    }
  }
  for (let i = 0; i < B; i++) {
    if (!(x.chosenTokens[i] >= 1 && x.rejectedTokens[i] >= 1)) {
      throw new Error(`preference loss: pair ${i} has an empty chosen or rejected completion`);
    }
  }
  if (B === 0) throw new Error("preference loss: empty batch");
  return B;
}

/** The batch-mean preference loss, its gradient and metrics. See the file header. */
export function preferenceLoss(cfg: PoLossConfig, x: PairLogps): PoLossResult {
  const { beta, labelSmoothing: eps } = cfg;
  if (!(beta > 0)) throw new Error(`preference loss: --beta must be > 0, got ${beta}`);
  if (!(eps >= 0 && eps < 0.5)) {
    throw new Error(`preference loss: --label_smoothing must be in [0, 0.5), got ${eps}`);
  }
  const free = isReferenceFree(cfg.type);
  const B = check(x, !free);
  const dC = new Float64Array(B), dR = new Float64Array(B);
  let loss = 0;
  const m = { rc: 0, rr: 0, acc: 0, lc: 0, lr: 0 };
  const extra: Record<string, number> = {};
  let chosenTokens = 0, chosenSum = 0;
  for (let i = 0; i < B; i++) {
    chosenTokens += x.chosenTokens[i];
    chosenSum += x.chosen[i];
  }
  for (let i = 0; i < B; i++) {
    const lc = x.chosen[i], lr = x.rejected[i];
    const nc = x.chosenTokens[i], nr = x.rejectedTokens[i];
    let rewC: number, rewR: number; // the logged rewards
    if (!free) {
      const rc = lc - x.refChosen![i], rr = lr - x.refRejected![i];
      const delta = rc - rr;
      rewC = beta * rc;
      rewR = beta * rr;
      let l: number, dDelta = 0, dc = 0, dr = 0;
      if (cfg.type === "sigmoid") {
        const [v, g] = smoothedSigmoid(beta * delta, eps);
        l = v;
        dDelta = beta * g;
      } else if (cfg.type === "hinge") {
        const v = 1 - beta * delta;
        l = Math.max(0, v);
        dDelta = v > 0 ? -beta : 0;
      } else {
        const v = rc / nc - rr / nr - 1 / (2 * beta);
        l = v * v;
        dc = (2 * v) / nc;
        dr = (-2 * v) / nr;
      }
      loss += l;
      dC[i] = (dDelta + dc) / B;
      dR[i] = (-dDelta + dr) / B;
    } else {
      const mc = lc / nc, mr = lr / nr;
      rewC = beta * mc;
      rewR = beta * mr;
      if (cfg.type === "simpo") {
        const [v, g] = smoothedSigmoid(beta * (mc - mr) - cfg.simpoGamma, eps);
        loss += v;
        dC[i] = (beta * g) / nc / B;
        dR[i] = (-beta * g) / nr / B;
      } else {
        const ac = Math.min(mc, ORPO_MAX_MEAN_LOGP), ar = Math.min(mr, ORPO_MAX_MEAN_LOGP);
        const lo = ac - ar - (log1mexp(ac) - log1mexp(ar));
        const ls = logSigmoid(lo);
        loss += -beta * ls;
        const dLo = -beta * (1 - sigmoid(lo)); // d(−β log σ(lo)) / d lo
        // d lo / d ℓ̄c = 1 / (1 − e^ℓ̄c), d lo / d ℓ̄r = −1 / (1 − e^ℓ̄r) (0 where clamped)
        const gc = mc < ORPO_MAX_MEAN_LOGP ? -1 / Math.expm1(ac) : 0;
        const gr = mr < ORPO_MAX_MEAN_LOGP ? 1 / Math.expm1(ar) : 0;
        // the NLL term −Σℓc / Σ|c| is added once below (its gradient per pair)
        dC[i] = (dLo * gc) / nc / B - 1 / chosenTokens;
        dR[i] = (dLo * gr) / nr / B;
        extra.log_odds_ratio = (extra.log_odds_ratio ?? 0) + ls / B;
        extra.log_odds_chosen = (extra.log_odds_chosen ?? 0) + lo / B;
      }
    }
    m.rc += rewC / B;
    m.rr += rewR / B;
    m.acc += (rewC > rewR ? 1 : 0) / B;
    m.lc += lc / B;
    m.lr += lr / B;
  }
  loss /= B;
  if (cfg.type === "orpo") {
    extra.nll_loss = -chosenSum / chosenTokens;
    loss += extra.nll_loss;
  }
  return {
    loss,
    dChosen: dC,
    dRejected: dR,
    metrics: {
      loss,
      "rewards/chosen": m.rc,
      "rewards/rejected": m.rr,
      "rewards/accuracies": m.acc,
      "rewards/margins": m.rc - m.rr,
      "logps/chosen": m.lc,
      "logps/rejected": m.lr,
      ...extra,
    },
  };
}

/**
 * Whether the chosen completion's implicit reward beats the rejected one's, per pair (the demo's
 * "preference accuracy"): β·ρc > β·ρr with a reference, β·ℓ̄c > β·ℓ̄r without.
 */
export function preferenceWins(
  type: PoLossType,
  x: PairLogps,
): boolean[] {
  const out: boolean[] = [];
  for (let i = 0; i < x.chosen.length; i++) {
    if (isReferenceFree(type)) {
      out.push(x.chosen[i] / x.chosenTokens[i] > x.rejected[i] / x.rejectedTokens[i]);
    } else {
      out.push(x.chosen[i] - x.refChosen![i] > x.rejected[i] - x.refRejected![i]);
    }
  }
  return out;
}
