// Seeded random numbers on the CPU (mulberry32 from src/data/rng.ts + a 32-bit mixer for
// counter-based streams).

/** A deterministic generator of uniform numbers in [0, 1) (mulberry32). */
export { mulberry32 as rng } from "../data/rng.ts";

/** Mix several integers into one 32-bit seed (for counter-based streams: seed, id, step). */
export function mixSeed(...xs: number[]): number {
  let h = 0x811c9dc5;
  for (const x of xs) {
    h = Math.imul(h ^ (x >>> 0), 0x01000193);
    h ^= h >>> 15;
    h = Math.imul(h, 0x2c1b3c6d);
    h ^= h >>> 12;
  }
  return h >>> 0;
}
