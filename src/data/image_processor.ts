/**
 * The vision tower's image preprocessing: resize to S×S, rescale, normalise, lay out as CHW.
 *
 * Settings come from a checkpoint's `preprocessor_config.json` (SigLIP's `SiglipImageProcessor`
 * fields: `size`, `resample`, `do_rescale`, `rescale_factor`, `do_normalize`, `image_mean`,
 * `image_std`); anything absent takes SiQ-VL's defaults (bicubic, 1/255, mean = std = 0.5, which
 * maps pixels to [−1, 1]).
 *
 * @module
 */

import { assertRgbImage, decodeImage, type RgbImage } from "./image.ts";
import { filterFromPilCode, resizeRgb } from "./resize.ts";

/** Plain-data preprocessing settings (safe to post to a worker). */
export interface ImageProcessorConfig {
  /** Output side S (square output S×S). */
  size: number;
  /** PIL resample code: 2 = bilinear, 3 = bicubic. */
  resample: number;
  doResize: boolean;
  doRescale: boolean;
  rescaleFactor: number;
  doNormalize: boolean;
  mean: [number, number, number];
  std: [number, number, number];
}

/** SiQ-VL's own pipeline: bicubic resize, ÷255, normalise with mean = std = 0.5. */
export function defaultImageProcessorConfig(size: number): ImageProcessorConfig {
  return {
    size,
    resample: 3,
    doResize: true,
    doRescale: true,
    rescaleFactor: 1 / 255,
    doNormalize: true,
    mean: [0.5, 0.5, 0.5],
    std: [0.5, 0.5, 0.5],
  };
}

function triple(v: unknown, field: string): [number, number, number] {
  if (typeof v === "number") return [v, v, v];
  if (Array.isArray(v) && v.length === 3 && v.every((x) => typeof x === "number")) {
    return [v[0], v[1], v[2]];
  }
  throw new Error(`preprocessor_config.json: ${field} must be a number or 3 numbers`);
}

/**
 * Parses `preprocessor_config.json`. `size` may be `{height, width}` (must be square),
 * `{shortest_edge}` or a number; when it is absent, `fallbackSize` (the vision config's
 * `image_size`) is used.
 */
export function parsePreprocessorConfig(
  json: Record<string, unknown>,
  fallbackSize?: number,
): ImageProcessorConfig {
  let size: number | undefined;
  const s = json.size as unknown;
  if (typeof s === "number") size = s;
  else if (s && typeof s === "object") {
    const o = s as Record<string, unknown>;
    if (typeof o.height === "number" && typeof o.width === "number") {
      if (o.height !== o.width) {
        throw new Error(
          `preprocessor_config.json: non-square size ${o.width}x${o.height} is not supported`,
        );
      }
      size = o.height;
    } else if (typeof o.shortest_edge === "number") size = o.shortest_edge;
  }
  if (size === undefined && typeof json.image_size === "number") size = json.image_size;
  if (size === undefined && typeof json.vit_image_size === "number") size = json.vit_image_size;
  size ??= fallbackSize;
  if (size === undefined || !Number.isInteger(size) || size <= 0) {
    throw new Error("preprocessor_config.json: no usable image size (size.height/width)");
  }
  const cfg = defaultImageProcessorConfig(size);
  if (json.resample !== undefined) {
    if (typeof json.resample !== "number") {
      throw new Error("preprocessor_config.json: resample must be a PIL code number");
    }
    filterFromPilCode(json.resample); // validate early
    cfg.resample = json.resample;
  }
  if (typeof json.do_resize === "boolean") cfg.doResize = json.do_resize;
  if (typeof json.do_rescale === "boolean") cfg.doRescale = json.do_rescale;
  if (typeof json.rescale_factor === "number") cfg.rescaleFactor = json.rescale_factor;
  if (typeof json.do_normalize === "boolean") cfg.doNormalize = json.do_normalize;
  if (json.image_mean !== undefined) cfg.mean = triple(json.image_mean, "image_mean");
  if (json.image_std !== undefined) cfg.std = triple(json.image_std, "image_std");
  if (cfg.std.some((x) => x === 0)) throw new Error("preprocessor_config.json: image_std has 0");
  return cfg;
}

/**
 * Turns an RGB image into the tower's input: resize (Pillow semantics) to S×S, then
 * `((v · rescale) − mean[c]) / std[c]`, laid out channel-major `[3, S, S]`.
 */
export function preprocessRgb(img: RgbImage, cfg: ImageProcessorConfig): Float32Array {
  assertRgbImage(img);
  const S = cfg.size;
  let src = img;
  if (img.width !== S || img.height !== S) {
    if (!cfg.doResize) {
      throw new Error(`image is ${img.width}x${img.height} but do_resize is false and S = ${S}`);
    }
    src = resizeRgb(img, S, S, filterFromPilCode(cfg.resample));
  }
  const plane = S * S;
  const out = new Float32Array(3 * plane);
  const r = cfg.doRescale ? cfg.rescaleFactor : 1;
  for (let c = 0; c < 3; c++) {
    const m = cfg.doNormalize ? cfg.mean[c] : 0;
    const inv = cfg.doNormalize ? 1 / cfg.std[c] : 1;
    // A 256-entry table keeps the per-pixel work to one lookup.
    const lut = new Float32Array(256);
    for (let v = 0; v < 256; v++) lut[v] = (v * r - m) * inv;
    const o = c * plane;
    for (let i = 0; i < plane; i++) out[o + i] = lut[src.data[i * 3 + c]];
  }
  return out;
}

/** Decodes encoded bytes and preprocesses them (see {@link preprocessRgb}). */
export async function preprocessBytes(
  bytes: Uint8Array,
  cfg: ImageProcessorConfig,
): Promise<Float32Array> {
  return preprocessRgb(await decodeImage(bytes), cfg);
}
