/**
 * Counter-based randomness for data order: every random choice is a pure function of
 * `(seed, keys…)`, so a data position needs no RNG state beyond the counters it already has,
 * and resuming from a checkpoint reproduces the exact same choices.
 *
 * @module
 */

/** 32-bit finaliser of MurmurHash3: a bijective avalanche mix. */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Hash of a string to 32 bits (FNV-1a, then mixed). */
export function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return fmix32(h);
}

/** Mixes a seed and any number of integer or string keys into 32 well-spread bits. */
export function hash32(seed: number, ...keys: (number | string)[]): number {
  let h = fmix32((seed >>> 0) ^ 0x9e3779b9);
  for (const k of keys) {
    const v = typeof k === "string" ? hashString(k) : k;
    // Integers up to 2^53: fold the high part in too.
    const lo = v >>> 0;
    const hi = Math.floor(v / 4294967296) >>> 0;
    h = fmix32(Math.imul(h ^ lo, 0x27d4eb2d) + 0x165667b1);
    h = fmix32(h ^ Math.imul(hi + 0x9e3779b9, 0x85ebca77));
  }
  return h;
}

/** Uniform number in [0, 1) determined by `(seed, keys…)`. */
export function uniform(seed: number, ...keys: (number | string)[]): number {
  return hash32(seed, ...keys) / 4294967296;
}

/** Uniform integer in [0, n) determined by `(seed, keys…)`. */
export function randInt(n: number, seed: number, ...keys: (number | string)[]): number {
  return Math.floor(uniform(seed, ...keys) * n);
}

/** A small sequential PRNG (mulberry32) for drawing many values from one seed. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A permutation of 0…n−1 (Fisher–Yates) determined by the seed. */
export function permutation(n: number, seed: number): Uint32Array {
  const p = new Uint32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  const r = mulberry32(hash32(seed, "permutation"));
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    const t = p[i];
    p[i] = p[j];
    p[j] = t;
  }
  return p;
}
