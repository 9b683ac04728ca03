// Linear layer y = x·Wᵀ + b (W [out, in], HF layout), with an optional LoRA adapter:
//
//   y = x·Wᵀ + b + s · (dropout(x)·Aᵀ)·Bᵀ      A: [r, in], B: [out, r], s = alpha / r (or / √r)
//
// PEFT naming: the adapter's parameters are "<linear>.lora_A.weight" and "<linear>.lora_B.weight".
// New adapters start as PEFT does: A ~ U(±1/√in) (kaiming-uniform with a = √5), B = 0.

import { add, linear, matmul, noGrad, scale, type Tensor, tidy } from "../tensor/mod.ts";
import { cast } from "../tensor/mod.ts";
import { dropout, dropoutId } from "./dropout.ts";
import { Module } from "./module.ts";
import type { Parameter } from "./parameter.ts";

/** LoRA hyper-parameters of one adapter. */
export interface LoraSpec {
  r: number;
  alpha: number;
  dropout: number;
  /** rsLoRA scaling alpha / √r instead of alpha / r. */
  rslora?: boolean;
}

/** A LoRA adapter attached to a Linear. */
export interface LoraState extends LoraSpec {
  A: Parameter;
  B: Parameter;
  /** alpha / r (alpha / √r with rsLoRA). */
  scaling: number;
  /** Adapters can be switched off (e.g. the DPO reference policy) without removing them. */
  enabled: boolean;
  /** Dropout stream id. */
  id: number;
}

/** HF-style fully connected layer. */
export class Linear extends Module {
  readonly weight: Parameter;
  readonly bias: Parameter | null;
  lora: LoraState | null = null;

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

  /** x: [..., in] → [..., out]. */
  forward(x: Tensor): Tensor {
    const l = this.lora;
    if (!l || !l.enabled) return linear(x, this.weight.value, this.bias?.value);
    return tidy(() => {
      const y = linear(x, this.weight.value, this.bias?.value);
      const xin = this.training ? dropout(x, l.dropout, l.id) : x;
      const low = linear(linear(xin, l.A.value), l.B.value);
      return add(y, scale(low, l.scaling));
    });
  }

  /** Attach a fresh LoRA adapter (parameters uninitialised until loaded or `initialize`d). */
  attachLora(spec: LoraSpec): LoraState {
    if (this.lora) throw new Error(`${this.weight.name || "linear"} already has a LoRA adapter`);
    if (!(spec.r >= 1 && Number.isInteger(spec.r))) {
      throw new Error(`LoRA rank ${spec.r} is invalid`);
    }
    const A = this.param("lora_A.weight", [spec.r, this.inFeatures], "matrix", {
      kind: "uniform",
      bound: 1 / Math.sqrt(this.inFeatures),
    });
    const B = this.param("lora_B.weight", [this.outFeatures, spec.r], "matrix", {
      kind: "constant",
      value: 0,
    });
    this.lora = {
      ...spec,
      A,
      B,
      scaling: spec.rslora ? spec.alpha / Math.sqrt(spec.r) : spec.alpha / spec.r,
      enabled: true,
      id: dropoutId(),
    };
    return this.lora;
  }

  /** Remove the adapter (without merging it). */
  detachLora(): void {
    if (!this.lora) return;
    this.removeParam("lora_A.weight");
    this.removeParam("lora_B.weight");
    this.lora = null;
  }

  /**
   * Fold the adapter into the base weight, W ← W + (alpha/r)·B·A, and remove it. The merged
   * weight keeps the base weight's dtype (f32 when the base weight is trainable).
   */
  mergeLora(): void {
    const l = this.lora;
    if (!l) return;
    const w = this.weight.value;
    const merged = noGrad(() =>
      tidy(() => {
        const delta = scale(matmul(l.B.value, l.A.value), l.scaling);
        const sum = add(w.dtype === "f32" ? w.detach() : cast(w, "f32"), delta);
        return w.dtype === "f32" ? sum : cast(sum, w.dtype);
      })
    );
    this.weight.set(merged);
    this.detachLora();
  }
}
