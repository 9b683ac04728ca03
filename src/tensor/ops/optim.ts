// Optimizer kernels (shaders/optim.wgsl): AdamW and global-norm gradient clipping, on the GPU
// with no readback.
//
//   clipCoefficient(sumsq, maxNorm)   sumsq: [] f32 (Σ g² over every trainable gradient, e.g.
//                                     sumOfSquares(grads)) → coef [2] f32 =
//                                     [min(1, maxNorm / (sqrt(sumsq) + 1e-6)), finite ? 1 : 0]
//   adamwStep(p, g, m, v, hp, coef?)  in place on p, m, v (f32, same number of elements as g):
//                                     torch.optim.AdamW with the gradient scaled by coef[0]; a
//                                     step whose coef[1] is 0 (non-finite gradients) changes
//                                     nothing. Without coef the gradient is used as it is.
// Tensors larger than one storage binding are updated window by window.

import { f32, type Gpu } from "../../gpu/device.ts";
import { keep, noGrad, Tensor } from "../tensor.ts";
import { flatWindows } from "../windows.ts";
import { kernel } from "../../gpu/kernel.ts";

const K = kernel("optim", {
  uniforms: ["n", "decay", "step_size", "b1", "omb1", "b2", "omb2", "bc2_sqrt", "eps", "max_norm"],
  bindings: ["p", "g", "m", "v", "coef", "sumsq", "cout"],
});

const WG = 256;
/** vec4s updated by one invocation (optim.wgsl PER). */
const PER_INVOCATION = 8;

/** AdamW hyper-parameters of one step (`step` = t, counted from 1). */
export interface AdamWParams {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  step: number;
}

function f32Scalarish(op: string, t: Tensor, n: number, what: string): void {
  if (t.dtype !== "f32" || t.size !== n) {
    throw new Error(`${op}: ${what} must be f32 with ${n} element(s), got ${t.describe()}`);
  }
}

/** [min(1, maxNorm / (‖g‖ + 1e-6)), finite(‖g‖²) ? 1 : 0] as an f32 [2] tensor, from Σg² []. */
export function clipCoefficient(sumsq: Tensor, maxNorm: number): Tensor {
  f32Scalarish("clipCoefficient", sumsq, 1, "sumsq");
  if (!(maxNorm > 0) || !Number.isFinite(maxNorm)) {
    throw new Error(`clipCoefficient: maxNorm must be a positive number, got ${maxNorm}`);
  }
  const out = Tensor.empty(sumsq.gpu, [2], "f32");
  K.dispatch(sumsq.gpu, "clip", {
    u: { max_norm: f32(maxNorm) },
    b: { sumsq, cout: out },
    workgroups: 1,
    label: "clipCoefficient",
  });
  return out;
}

// A [1, 1] coefficient per device, for steps without clipping.
const unitCoef = new WeakMap<Gpu, Tensor>();
function unit(gpu: Gpu): Tensor {
  let t = unitCoef.get(gpu);
  if (!t || t.disposed) {
    t = keep(noGrad(() => Tensor.from(gpu, [1, 1], [2], "f32")));
    t.name = "adamw unit coefficient";
    unitCoef.set(gpu, t);
  }
  return t;
}

function checkHp(hp: AdamWParams): void {
  const bad = (what: string, v: number) => {
    throw new Error(`adamwStep: bad ${what} ${v}`);
  };
  if (!(hp.lr >= 0) || !Number.isFinite(hp.lr)) bad("lr", hp.lr);
  if (!(hp.beta1 >= 0 && hp.beta1 < 1)) bad("beta1", hp.beta1);
  if (!(hp.beta2 >= 0 && hp.beta2 < 1)) bad("beta2", hp.beta2);
  if (!(hp.eps >= 0) || !Number.isFinite(hp.eps)) bad("eps", hp.eps);
  if (!(hp.weightDecay >= 0) || !Number.isFinite(hp.weightDecay)) {
    bad("weightDecay", hp.weightDecay);
  }
  if (!(Number.isInteger(hp.step) && hp.step >= 1)) bad("step (an integer ≥ 1)", hp.step);
}

/**
 * One AdamW step in place: p, m, v f32 (moments start at zero), g f32 with as many elements.
 * coef: optional f32 [2] from clipCoefficient — gradient scale, and 0 to skip the step.
 */
export function adamwStep(
  p: Tensor,
  g: Tensor,
  m: Tensor,
  v: Tensor,
  hp: AdamWParams,
  coef?: Tensor,
): void {
  checkHp(hp);
  const n = p.size;
  for (const [what, t] of [["p", p], ["g", g], ["m", m], ["v", v]] as const) {
    f32Scalarish("adamwStep", t, n, what);
  }
  if (coef) f32Scalarish("adamwStep", coef, 2, "coef");
  if (new Set([p.storage, g.storage, m.storage, v.storage]).size !== 4) {
    throw new Error("adamwStep: p, g, m and v must be distinct tensors");
  }
  if (n === 0) return;
  const gpu = p.gpu;
  const c = coef ?? unit(gpu);
  const { lr, beta1, beta2, eps, weightDecay, step } = hp;
  const hyper = {
    decay: f32(1 - lr * weightDecay),
    step_size: f32(lr / (1 - beta1 ** step)),
    b1: f32(beta1),
    omb1: f32(1 - beta1),
    b2: f32(beta2),
    omb2: f32(1 - beta2),
    bc2_sqrt: f32(Math.sqrt(1 - beta2 ** step)),
    eps: f32(eps),
  };
  // p, g, m, v have the same size, so their windows line up.
  const [wp, wg, wm, wv] = [p, g, m, v].map(flatWindows);
  const cb = c.binding();
  wp.forEach((w, k) => {
    K.dispatch(gpu, "adamw", {
      u: { n: w.n, ...hyper },
      b: { p: w.binding, g: wg[k].binding, m: wm[k].binding, v: wv[k].binding, coef: cb },
      workgroups: Math.ceil(w.n / (4 * PER_INVOCATION * WG)),
      label: "adamw",
    });
  });
}
