// Which kernel family an op runs on a device: the lavapipe-tuned kernels (texture staging, 8-wide
// workgroups, big per-invocation register blocks) on a CPU (fallback) adapter, the GPU variants
// (workgroup-shared tiles: shaders/gemm_tiled.wgsl, shaders/attention_tiled.wgsl) on a real GPU,
// or everywhere when tuning.forceGpuVariants (SIQVL_KERNELS=gpu) asks for them — which is how the
// tests check the GPU variants on lavapipe. Benches pin one family per device with
// setGpuKernels to compare both on the same adapter.

import type { Gpu } from "../gpu/device.ts";
import { tuning } from "./tuning.ts";

const overrides = new WeakMap<Gpu, boolean>();

/** True when ops should use the kernel variants meant for a discrete GPU on `gpu`. */
export function useGpuKernels(gpu: Gpu): boolean {
  return overrides.get(gpu) ?? (tuning.forceGpuVariants || !gpu.isFallbackAdapter);
}

/** Pin the choice on `gpu` (true: GPU variants, false: lavapipe kernels); null restores it. */
export function setGpuKernels(gpu: Gpu, on: boolean | null): void {
  if (on === null) overrides.delete(gpu);
  else overrides.set(gpu, on);
}
