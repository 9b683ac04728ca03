// The one start-up line every CLI prints: adapter, backend, the limits that decide model sizes,
// shader-f16 support, and — for a software adapter such as lavapipe — what speed to expect.
//
//   import { announce } from "../src/gpu/announce.ts";
//   const gpu = await announce(); // after --help is handled: Gpu.get() + the line, once

import { Gpu } from "./device.ts";

/** The start-up line for `gpu`. */
export function adapterLine(gpu: Gpu): string {
  const slow = gpu.isFallbackAdapter
    ? " — software adapter: kernels run on the CPU (~10 GFLOP/s matmul on lavapipe), so expect " +
      "the demo to take minutes and a real-size training step about a minute or more"
    : "";
  const gl = gpu.backend.includes("OpenGL")
    ? " — OpenGL backend (forced by SIQVL_ADAPTER): unsupported, wgpu may print texture-view " +
      "warnings"
    : "";
  return `[siqvl] adapter: ${gpu.describe()}${slow}${gl}`;
}

let announced: Gpu | null = null;

/**
 * Get the shared runtime (or use `gpu`) and print its start-up line — once per process, however
 * many CLIs or stages call it. Returns the runtime.
 */
export async function announce(
  gpu?: Gpu,
  log: (line: string) => void = console.log,
): Promise<Gpu> {
  const g = gpu ?? await Gpu.get();
  if (announced !== g) {
    announced = g;
    log(adapterLine(g));
  }
  return g;
}
