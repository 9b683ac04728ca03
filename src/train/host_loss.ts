// A loss computed on the CPU from a small GPU tensor (per-sequence or per-token log-probs), put
// back on the tape.
//
//   hostLoss(x, value, grad) → [] f32 holding `value`; backward sends g · grad (grad: dValue/dx,
//   CPU numbers of x's shape) into x.
// Preference and GRPO objectives read a few hundred numbers per step; computing them in f64 on
// the CPU (po_loss.ts, grpo.ts) keeps the formulas in one testable place, and the gradient flows
// through sequenceLogProbs' backward into the model.

import { mul, record, Tensor } from "../tensor/mod.ts";

/** A scalar loss tensor whose gradient with respect to `x` is `grad` (see the file header). */
export function hostLoss(x: Tensor, value: number, grad: ArrayLike<number>): Tensor {
  if (grad.length !== x.size) {
    throw new Error(`hostLoss: ${grad.length} gradient values for ${x.describe()}`);
  }
  const out = Tensor.from(x.gpu, [value], [], "f32");
  const gradT = Tensor.from(x.gpu, Float32Array.from(grad), [x.size, 1], "f32");
  const res = record("hostLoss", out, [x], (g) => {
    // [x.size, 1] ⊙ g (broadcast of the one upstream value)
    const y = mul(gradT, g);
    const v = y.view(x.shape);
    y.dispose();
    return [v];
  }, [gradT]);
  gradT.dispose();
  return res;
}
