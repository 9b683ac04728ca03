// Kernel-path switches: which implementation an op picks where several exist. Defaults are the
// fastest measured on the development machine (bench/RESULTS.md); benches flip them to measure the
// old and new paths in one run (bench/train_step.ts --variant), tests flip them to check that every
// path gives the same numbers.

/** The switches (mutate in place; `withTuning` scopes a change). */
export interface Tuning {
  /**
   * The training loss reads only the positions that have a target (gathered rows), instead of
   * every position of the sequence (src/models/siqvl.ts).
   */
  compactLossRows: boolean;
  /**
   * Input gradients of a product with a [N, K] (Linear-layout) weight read the weight's forward
   * staging directly (gemm_nn_*, shaders/matmul.wgsl) instead of packing its transpose.
   */
  transposedGemm: boolean;
  /**
   * Use the kernel variants meant for a discrete GPU even on a CPU adapter (correctness checks
   * of those paths on lavapipe): the matmul tile shape {wg 64, rows 4}. Set from the environment
   * variable SIQVL_KERNELS=gpu (bench/device_check.sh).
   */
  forceGpuVariants: boolean;
}

function envForcesGpu(): boolean {
  try {
    return Deno.env.get("SIQVL_KERNELS") === "gpu";
  } catch {
    return false; // no --allow-env
  }
}

/** Process-wide switches. */
export const tuning: Tuning = {
  compactLossRows: true,
  transposedGemm: true,
  forceGpuVariants: envForcesGpu(),
};

/** The defaults, for `Object.assign(tuning, TUNING_DEFAULTS)`. */
export const TUNING_DEFAULTS: Readonly<Tuning> = { ...tuning };

/** Run `fn` with some switches changed, restoring them afterwards (also for async fn). */
export function withTuning<T>(change: Partial<Tuning>, fn: () => T): T {
  const saved = { ...tuning };
  Object.assign(tuning, change);
  let async = false;
  try {
    const r = fn();
    if (r instanceof Promise) {
      async = true;
      return r.finally(() => Object.assign(tuning, saved)) as T;
    }
    return r;
  } finally {
    if (!async) Object.assign(tuning, saved);
  }
}
