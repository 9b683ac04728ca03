// Linear layer y = x·Wᵀ + b (W [out, in], HF layout), with an optional LoRA adapter hung on it
// (`lora`; everything about adapters — injection, merge, PEFT names — is in lora.ts):
//
//   y = x·Wᵀ + b + s · (dropout(x)·Aᵀ)·Bᵀ      while the adapter is enabled and not merged

import { add, linear, scale, type Tensor, tidy } from "../tensor/mod.ts";
import { dropout } from "./dropout.ts";
import type { LoraState } from "./lora.ts";
import { Module } from "./module.ts";
import type { Parameter } from "./parameter.ts";

export type { LoraSpec, LoraState } from "./lora.ts";

/** HF-style fully connected layer. */
export class Linear extends Module {
  readonly weight: Parameter;
  readonly bias: Parameter | null;
  #lora: LoraState | null = null;

  constructor(
    readonly inFeatures: number,
    readonly outFeatures: number,
    bias: boolean,
    std = 0.02,
  ) {
    super();
    this.weight = this.param("weight", [outFeatures, inFeatures], "matrix", {
      kind: "normal",
      std,
    });
    this.bias = bias
      ? this.param("bias", [outFeatures], "vector", { kind: "constant", value: 0 })
      : null;
  }

  /** The adapter; setting one registers its A/B as "lora_A.weight"/"lora_B.weight". */
  get lora(): LoraState | null {
    return this.#lora;
  }

  set lora(l: LoraState | null) {
    if (this.#lora) {
      this.unshareParam("lora_A.weight");
      this.unshareParam("lora_B.weight");
    }
    this.#lora = l;
    if (l) {
      this.shareParam("lora_A.weight", l.A);
      this.shareParam("lora_B.weight", l.B);
    }
  }

  /** x: [..., in] → [..., out]. */
  forward(x: Tensor): Tensor {
    const l = this.#lora;
    if (!l || !l.enabled || l.merged) return linear(x, this.weight.value, this.bias?.value);
    return tidy(() => {
      const y = linear(x, this.weight.value, this.bias?.value);
      const xin = this.training ? dropout(x, l.dropout, l.id) : x;
      const low = linear(linear(xin, l.A.value), l.B.value);
      return add(y, scale(low, l.scaling));
    });
  }
}
