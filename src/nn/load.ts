// Filling parameters from checkpoint tensors (safetensors / .bin through src/io's readers).
//
// dtype policy: a frozen matrix or embedding keeps its stored f16/bf16 bytes (uploaded as they
// are, widened in the kernels); f32 stays f32; everything else (1-D weights, biases, f64, a
// trainable parameter) becomes f32. Tensors are read and uploaded one at a time, so host memory
// never holds more than the largest tensor.

import type { Gpu } from "../gpu/device.ts";
import type { TensorReader } from "../io/reader.ts";
import { type DType, Tensor } from "../tensor/mod.ts";
import type { Module } from "./module.ts";
import type { Parameter } from "./parameter.ts";

/** Load one tensor of a source into a parameter (shape checked, dtype policy above). */
export async function loadParameter(
  gpu: Gpu,
  p: Parameter,
  src: TensorReader,
  key: string,
): Promise<void> {
  const info = src.info(key);
  const same = info.shape.length === p.shape.length && info.shape.every((d, i) => d === p.shape[i]);
  if (!same) {
    throw new Error(
      `${src.path}: tensor "${key}" has shape [${info.shape.join(", ")}], but parameter ` +
        `${p.name} expects [${p.shape.join(", ")}]`,
    );
  }
  const keepHalf = p.role !== "vector" && !p.trainable &&
    (info.dtype === "F16" || info.dtype === "BF16");
  let t: Tensor;
  if (keepHalf || info.dtype === "F32") {
    const dtype: DType = info.dtype === "F32" ? "f32" : info.dtype === "F16" ? "f16" : "bf16";
    t = Tensor.fromBytes(gpu, await src.read(key), p.shape, dtype);
  } else {
    t = Tensor.from(gpu, await src.readF32(key), p.shape, "f32");
  }
  p.set(t);
}

/**
 * Load every parameter of `module` (names from `module.namedParameters(prefix)`) from `src`,
 * mapping each parameter name to a source key with `keyOf` (default: the name). Parameters
 * whose key is absent are returned (the caller decides whether that is an error).
 */
export async function loadModule(
  gpu: Gpu,
  module: Module,
  src: TensorReader,
  opts: { prefix?: string; keyOf?: (name: string) => string | null } = {},
): Promise<string[]> {
  const missing: string[] = [];
  for (const [name, p] of module.namedParameters(opts.prefix ?? "")) {
    const key = opts.keyOf ? opts.keyOf(name) : name;
    if (key === null || !src.has(key)) {
      missing.push(name);
      continue;
    }
    await loadParameter(gpu, p, src, key);
  }
  return missing;
}
