// Normalisation layers (weights and biases always f32).
//
//   RMSNorm:   y = w ⊙ x / √(mean(x²) + eps)              (Qwen2)
//   LayerNorm: y = w ⊙ (x − mean) / √(var + eps) + b       (SigLIP, the V1 projector)

import { layerNorm, rmsNorm, type Tensor } from "../tensor/mod.ts";
import { Module } from "./module.ts";
import type { Parameter } from "./parameter.ts";

/** Root-mean-square norm over the last dim. */
export class RMSNorm extends Module {
  readonly weight: Parameter;

  constructor(readonly dim: number, readonly eps: number) {
    super();
    this.weight = this.param("weight", [dim], "vector", { kind: "constant", value: 1 });
  }

  /** x: [..., dim] → [..., dim]. */
  forward(x: Tensor): Tensor {
    return rmsNorm(x, this.weight.value, this.eps);
  }
}

/** Affine layer norm over the last dim. */
export class LayerNorm extends Module {
  readonly weight: Parameter;
  readonly bias: Parameter;

  constructor(readonly dim: number, readonly eps: number) {
    super();
    this.weight = this.param("weight", [dim], "vector", { kind: "constant", value: 1 });
    this.bias = this.param("bias", [dim], "vector", { kind: "constant", value: 0 });
  }

  /** x: [..., dim] → [..., dim]. */
  forward(x: Tensor): Tensor {
    return layerNorm(x, this.weight.value, this.bias.value, this.eps);
  }
}
