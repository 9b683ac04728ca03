// Shared test helpers: a seeded RNG, random (never zero) inputs, and tolerance checks against
// float64 references.
//
// Tolerances (relative error = ‖got − want‖₂ / ‖want‖₂ unless a test says otherwise):
//   f32 kernels vs f64 reference ........ 1e-5 (pointwise), 1e-4 (reductions over > 1k terms)
//   f16 storage (inputs rounded first) .. 1e-3
//   bf16 storage (inputs rounded first) . 1e-2 where the reference uses unrounded inputs,
//                                          1e-5 where the reference uses the rounded inputs

import { Gpu } from "../src/gpu/device.ts";

export const TOL = { f32: 1e-5, f32Reduce: 1e-4, f16: 1e-3, bf16: 1e-2 } as const;

import { mulberry32 as rng } from "../src/data/rng.ts";
export { rng };

/** n values uniform in ±[lo, hi] with random sign (never zero). */
export function rand(n: number, seed = 1, lo = 0.05, hi = 1): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const m = lo + (hi - lo) * r();
    out[i] = r() < 0.5 ? -m : m;
  }
  return out;
}

/** Relative L2 error of got vs want. */
export function relErr(got: ArrayLike<number>, want: ArrayLike<number>): number {
  if (got.length !== want.length) {
    throw new Error(`length ${got.length} vs ${want.length}`);
  }
  let num = 0, den = 0;
  for (let i = 0; i < got.length; i++) {
    const d = got[i] - want[i];
    if (!Number.isFinite(got[i])) return Infinity;
    num += d * d;
    den += want[i] * want[i];
  }
  return Math.sqrt(num) / Math.max(Math.sqrt(den), 1e-30);
}

/** Throw when the relative error exceeds tol (message names what was compared). */
export function assertClose(
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  tol: number,
  what = "values",
): void {
  const e = relErr(got, want);
  if (!(e <= tol)) {
    let worst = 0, wi = 0;
    for (let i = 0; i < got.length; i++) {
      const d = Math.abs(got[i] - want[i]);
      if (!(d <= worst)) {
        worst = d;
        wi = i;
      }
    }
    throw new Error(
      `${what}: relative error ${e.toExponential(3)} > ${tol} ` +
        `(worst at ${wi}: got ${got[wi]}, want ${want[wi]})`,
    );
  }
}

/** The shared GPU (tests share one device). */
export function gpu(): Promise<Gpu> {
  return Gpu.get();
}

/** Deno.test options for GPU tests (resources persist across tests by design). */
export const GPU_TEST = { sanitizeResources: false, sanitizeOps: false } as const;
