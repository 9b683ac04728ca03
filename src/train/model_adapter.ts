// The seam between the trainer and the SiQ-VL model: collated CPU batches → model inputs →
// loss, and the stage's choice of trainable parameters.

import type { SiqvlModel } from "../models/siqvl.ts";
import { noGrad, Tensor } from "../tensor/tensor.ts";
import { cast } from "../tensor/ops/elementwise.ts";
import type { LossModel, MicroBatch } from "./step.ts";
import type { StagePlan } from "./stages.ts";

/** A collated batch on the CPU (row-major [B, T] arrays and [I, C, S, S] pixels). */
export interface SiqvlBatchData {
  batch: number;
  seqLen: number;
  inputIds: Int32Array;
  attentionMask: Int32Array;
  labels: Int32Array;
  /** Images in the order of their <|image_pad|> runs; null for a text-only batch. */
  pixels: Float32Array | null;
  pixelShape: [number, number, number, number] | null;
}

/** Count what a batch holds: rows, real tokens, counted (shifted) targets. */
export function microBatchOf(d: SiqvlBatchData): MicroBatch {
  let tokens = 0, targets = 0;
  for (let i = 0; i < d.attentionMask.length; i++) tokens += d.attentionMask[i] ? 1 : 0;
  for (let b = 0; b < d.batch; b++) {
    for (let t = 1; t < d.seqLen; t++) if (d.labels[b * d.seqLen + t] !== -100) targets++;
  }
  return { numSamples: d.batch, numTokens: tokens, numLossTokens: targets, data: d };
}

/** Upload a batch's pixels (f32 [I, C, S, S]) or undefined. */
export function uploadPixels(model: SiqvlModel, d: SiqvlBatchData): Tensor | undefined {
  if (!d.pixels || !d.pixelShape) return undefined;
  return noGrad(() => Tensor.from(model.gpu, d.pixels!, d.pixelShape!, "f32"));
}

/** The trainer's view of a SiQ-VL model: loss of a micro-batch. */
export function siqvlLossModel(model: SiqvlModel): LossModel {
  return {
    lossOf(mb: MicroBatch) {
      const d = mb.data as SiqvlBatchData;
      const px = uploadPixels(model, d);
      const out = model.forward({
        inputIds: d.inputIds,
        batch: d.batch,
        seqLen: d.seqLen,
        attentionMask: d.attentionMask,
        labels: d.labels,
        pixelValues: px,
      });
      if (!out.loss) throw new Error("model forward returned no loss (labels missing?)");
      return { loss: out.loss, numLossTokens: out.numLossTokens, dispose: [out.hidden] };
    },
  };
}

/**
 * Freeze and unfreeze for a stage: everything frozen, then the projector trainable, plus the
 * whole language model (full) or its LoRA adapters (lora). The vision tower stays frozen.
 * Returns the trainable parameters in a stable (state-dict) order.
 */
export function applyStagePlan(model: SiqvlModel, plan: StagePlan): [string, Tensor][] {
  model.setTrainable(false);
  model.projector.setTrainable(true);
  if (plan.llm === "full") model.text.setTrainable(true);
  if (plan.llm === "lora") {
    const lin = model.text.loraLinears();
    if (!lin.length) throw new Error("stage plan 'lora' but the model has no LoRA adapters");
    for (const [, l] of lin) {
      l.lora!.A.setTrainable(true);
      l.lora!.B.setTrainable(true);
    }
  }
  if (model.vision.trainableParameters().length) {
    throw new Error("internal: the vision tower must stay frozen");
  }
  return model.trainableParameters().map(([n, p]) => [n, p.value]);
}

/** Storage dtype of frozen weights from the precision flags (--bf16 / --fp16 / --no_bf16). */
export function frozenStorageDtype(a: { bf16: boolean; fp16: boolean }): "bf16" | "f16" | "f32" {
  return a.bf16 ? "bf16" : a.fp16 ? "f16" : "f32";
}

/** Whether `name` trains under `plan` (same rule as {@link applyStagePlan}). */
export function trainsUnder(name: string, plan: StagePlan): boolean {
  if (name.startsWith("projector.")) return true;
  if (!name.startsWith("text_model.")) return false;
  const lora = /\.lora_[AB]\.weight$/.test(name);
  return plan.llm === "lora" ? lora : plan.llm === "full";
}

/**
 * Put every weight in the dtype it will live in: parameters that will train become f32 (master
 * weights); frozen matrices and embeddings take `frozen` (bf16/f16 packed, widened in the
 * kernels; 1-D weights always stay f32). Tensors too large for one storage binding are converted
 * on the CPU (one readback at load time). Call before {@link applyStagePlan}.
 */
export async function prepareStorage(
  model: SiqvlModel,
  plan: StagePlan,
  frozen: "bf16" | "f16" | "f32",
): Promise<{ converted: number; bytesBefore: number; bytesAfter: number }> {
  const gpu = model.gpu;
  const limit = gpu.limits.maxStorageBufferBindingSize;
  const bytesBefore = model.parameterBytes();
  let converted = 0;
  for (const [name, p] of model.namedParameters()) {
    if (!p.loaded) continue;
    const v = p.value;
    if (v.dtype === "i32") continue;
    const want = trainsUnder(name, plan) || p.role === "vector" ? "f32" : frozen;
    if (v.dtype === want) continue;
    const outBytes = Math.ceil(v.size * (want === "f32" ? 4 : 2) / 4) * 4;
    let t: Tensor;
    if (v.bytes <= limit && outBytes <= limit) {
      t = noGrad(() => cast(v, want));
    } else {
      t = Tensor.from(gpu, await v.readF32(), v.shape, want);
    }
    p.set(t);
    converted++;
  }
  return { converted, bytesBefore, bytesAfter: model.parameterBytes() };
}
