// Which kernel family an op runs on a device: the lavapipe-tuned kernels (texture staging, 8-wide
// workgroups, big per-invocation register blocks) on a CPU (fallback) adapter, the GPU variants
// (workgroup-shared tiles: shaders/gemm_tiled.wgsl, shaders/attention_tiled.wgsl) on a real GPU,
// or everywhere when tuning.forceGpuVariants (SIQVL_KERNELS=gpu) asks for them — which is how the
// tests check the GPU variants on lavapipe.

import type { Gpu } from "../gpu/device.ts";
import { tuning } from "./tuning.ts";

/** True when ops should use the kernel variants meant for a discrete GPU on `gpu`. */
export function useGpuKernels(gpu: Gpu): boolean {
  return tuning.forceGpuVariants || !gpu.isFallbackAdapter;
}
