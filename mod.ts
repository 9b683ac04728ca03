/**
 * siqvl — train and run SiQ-VL vision-language models (SigLIP → pixel-shuffle projector →
 * Qwen2.5) on WebGPU, from TypeScript.
 *
 * ```ts
 * import { Gpu, Tensor, matmul } from "./mod.ts";
 * const gpu = await Gpu.get();
 * ```
 * @module
 */
export { f32, foldGrid, Gpu } from "./src/gpu/device.ts";
export type {
  BindingLike,
  Dispatch,
  GpuFeatures,
  GpuLimits,
  UniformArg,
} from "./src/gpu/device.ts";
export { BufferPool, sizeClass } from "./src/gpu/pool.ts";
export type { PoolStats } from "./src/gpu/pool.ts";
export * from "./src/tensor/mod.ts";
export * from "./src/nn/mod.ts";
export * from "./src/models/mod.ts";
export * from "./src/infer/mod.ts";
/** Images, tokenizer, chat templates, labels, collator and datasets. */
export * as data from "./src/data/mod.ts";
/** safetensors / PyTorch .bin readers and writers, hub download, cache and upload. */
export * as io from "./src/io/mod.ts";
/** Training: run a stage (`trainFromArgv`, `runTraining`), the stage interface, callbacks. */
export * as train from "./src/train/mod.ts";
