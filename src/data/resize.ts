/**
 * Antialiased image resampling with Pillow's semantics (`Image.resize` → `ImagingResample`).
 *
 * The resize is separable: a horizontal pass, then a vertical pass, each skipped when that axis
 * keeps its size. For every output pixel the filter is centred on `(i + 0.5) · scale` in input
 * coordinates; when shrinking, the filter is stretched by the scale factor (its support widens)
 * so every input pixel contributes — that is the antialiasing. Weights are normalised to sum 1.
 *
 * 8-bit images follow Pillow's fixed-point arithmetic exactly: weights are rounded to 22
 * fractional bits, each pass accumulates integers with a rounding offset, and the result of each
 * pass is clamped to 0…255, so the intermediate image is 8-bit as in Pillow.
 *
 * @module
 */

import { assertRgbImage, type RgbImage } from "./image.ts";

/** A resampling filter: its kernel and its support (half-width) at scale 1. */
export interface ResampleFilter {
  name: string;
  support: number;
  kernel(x: number): number;
}

/** Pillow's BILINEAR (triangle) filter, support 1. */
export const BILINEAR: ResampleFilter = {
  name: "bilinear",
  support: 1,
  kernel(x) {
    x = Math.abs(x);
    return x < 1 ? 1 - x : 0;
  },
};

/** Pillow's BICUBIC filter: Keys cubic convolution with a = −0.5, support 2. */
export const BICUBIC: ResampleFilter = {
  name: "bicubic",
  support: 2,
  kernel(x) {
    const a = -0.5;
    x = Math.abs(x);
    if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
    if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
    return 0;
  },
};

/**
 * Maps a PIL resample code (as stored in `preprocessor_config.json`'s `resample`) to a filter.
 * 2 = BILINEAR, 3 = BICUBIC; other codes (NEAREST, LANCZOS, BOX, HAMMING) are rejected.
 */
export function filterFromPilCode(code: number): ResampleFilter {
  if (code === 2) return BILINEAR;
  if (code === 3) return BICUBIC;
  const names: Record<number, string> = {
    0: "NEAREST",
    1: "LANCZOS",
    4: "BOX",
    5: "HAMMING",
  };
  throw new Error(
    `unsupported resample ${code}${names[code] ? ` (${names[code]})` : ""}: ` +
      `only 2 (BILINEAR) and 3 (BICUBIC) are implemented`,
  );
}

/** Filter weights for one axis: output pixel i reads `count[i]` inputs starting at `start[i]`. */
export interface AxisWeights {
  start: Int32Array;
  count: Int32Array;
  /** Row-major [outSize, taps]; entries past `count[i]` are 0. */
  weights: Float64Array;
  taps: number;
}

/** Fractional bits of Pillow's fixed-point weights for 8-bit images (32 − 8 − 2). */
export const PRECISION_BITS = 22;

/**
 * Computes normalised filter weights for resizing one axis from `inSize` to `outSize`
 * (Pillow's `precompute_coeffs` over the full box [0, inSize]).
 */
export function axisWeights(inSize: number, outSize: number, filter: ResampleFilter): AxisWeights {
  if (!(inSize > 0 && outSize > 0)) {
    throw new Error(`resize sizes must be positive, got ${inSize} -> ${outSize}`);
  }
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = filter.support * filterScale;
  const taps = Math.ceil(support) * 2 + 1;
  const start = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const weights = new Float64Array(outSize * taps);
  const inv = 1 / filterScale;
  for (let i = 0; i < outSize; i++) {
    const center = (i + 0.5) * scale;
    // Pillow rounds with a C cast (truncation); negatives are clamped to 0 right after.
    const lo = Math.max(Math.trunc(center - support + 0.5), 0);
    const hi = Math.min(Math.trunc(center + support + 0.5), inSize);
    const n = hi - lo;
    let sum = 0;
    for (let k = 0; k < n; k++) {
      const w = filter.kernel((k + lo - center + 0.5) * inv);
      weights[i * taps + k] = w;
      sum += w;
    }
    if (sum !== 0) { for (let k = 0; k < n; k++) weights[i * taps + k] /= sum; }
    start[i] = lo;
    count[i] = n;
  }
  return { start, count, weights, taps };
}

const ONE = 2 ** PRECISION_BITS;
const HALF = 2 ** (PRECISION_BITS - 1);

/** Rounds weights to Pillow's fixed point (half away from zero). */
function fixedPoint(w: Float64Array): Float64Array {
  const out = new Float64Array(w.length);
  for (let i = 0; i < w.length; i++) {
    out[i] = w[i] < 0 ? Math.trunc(-0.5 + w[i] * ONE) : Math.trunc(0.5 + w[i] * ONE);
  }
  return out;
}

/** Clamp of a fixed-point accumulator to a byte (Pillow's clip8). Negative sums give 0. */
function clip8(acc: number): number {
  const v = (acc / ONE) | 0;
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/** Horizontal pass over interleaved 8-bit RGB rows. */
function resampleRows(
  src: Uint8Array,
  inW: number,
  rows: number,
  ax: AxisWeights,
  outW: number,
): Uint8Array {
  const k = fixedPoint(ax.weights);
  const out = new Uint8Array(outW * rows * 3);
  const { start, count, taps } = ax;
  for (let y = 0; y < rows; y++) {
    const rowIn = y * inW * 3;
    let o = y * outW * 3;
    for (let x = 0; x < outW; x++) {
      let r = HALF, g = HALF, b = HALF;
      let p = rowIn + start[x] * 3;
      const base = x * taps, n = count[x];
      for (let t = 0; t < n; t++, p += 3) {
        const w = k[base + t];
        r += src[p] * w;
        g += src[p + 1] * w;
        b += src[p + 2] * w;
      }
      out[o++] = clip8(r);
      out[o++] = clip8(g);
      out[o++] = clip8(b);
    }
  }
  return out;
}

/** Vertical pass over interleaved 8-bit rows of `stride` bytes. */
function resampleCols(src: Uint8Array, stride: number, ax: AxisWeights, outH: number): Uint8Array {
  const k = fixedPoint(ax.weights);
  const out = new Uint8Array(outH * stride);
  const acc = new Float64Array(stride);
  for (let y = 0; y < outH; y++) {
    acc.fill(HALF);
    const s = ax.start[y], n = ax.count[y], base = y * ax.taps;
    for (let t = 0; t < n; t++) {
      const w = k[base + t];
      const row = (s + t) * stride;
      for (let i = 0; i < stride; i++) acc[i] += src[row + i] * w;
    }
    const o = y * stride;
    for (let i = 0; i < stride; i++) out[o + i] = clip8(acc[i]);
  }
  return out;
}

/**
 * Resizes an 8-bit RGB image to `outW`×`outH` with Pillow's antialiased resampling, bit-exact
 * with `PIL.Image.resize((outW, outH), filter)` on an RGB image.
 */
export function resizeRgb(
  img: RgbImage,
  outW: number,
  outH: number,
  filter: ResampleFilter = BICUBIC,
): RgbImage {
  assertRgbImage(img);
  if (!(Number.isInteger(outW) && Number.isInteger(outH) && outW > 0 && outH > 0)) {
    throw new Error(`resize target must be positive integers, got ${outW}x${outH}`);
  }
  let data = img.data;
  let width = img.width;
  if (outW !== img.width) {
    data = resampleRows(data, img.width, img.height, axisWeights(img.width, outW, filter), outW);
    width = outW;
  }
  if (outH !== img.height) {
    data = resampleCols(data, width * 3, axisWeights(img.height, outH, filter), outH);
  }
  if (data === img.data) data = data.slice();
  return { width: outW, height: outH, data };
}
