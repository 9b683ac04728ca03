/**
 * Image decoding: encoded file bytes → 8-bit RGB pixels.
 *
 * JPEG (baseline, progressive, gray, CMYK), PNG (8/16-bit, gray, palette, alpha) and GIF (first
 * frame) are decoded with `imagescript`. Every other container (WebP, BMP, TIFF, AVIF, …) is
 * rejected with an {@link ImageDecodeError} whose `reason` is `"unsupported-format"`, so a data
 * pipeline can skip and count the sample instead of crashing. Transparent pixels are composited
 * over white (what SiQ-VL's dataset does before its RGB conversion).
 *
 * @module
 */

// The decoder is imported on first decode, so RgbImage helpers (resize, preprocessing) load in a
// browser bundle without it; a page decodes with createImageBitmap (src/web/image.ts).
const decoder = () => import("../deps.ts");

/** 8-bit RGB pixels, row-major and interleaved: `data[(y * width + x) * 3 + c]`. */
export interface RgbImage {
  width: number;
  height: number;
  /** Length `width * height * 3`. */
  data: Uint8Array;
}

/** An image as a sample carries it: encoded file bytes (JPEG/PNG/GIF) or decoded RGB pixels. */
export type ImageSource = Uint8Array | RgbImage;

/** Container formats recognised by their magic bytes. */
export type ImageFormat =
  | "jpeg"
  | "png"
  | "gif"
  | "webp"
  | "bmp"
  | "tiff"
  | "avif"
  | "heic"
  | "unknown";

/** Why an image could not be turned into pixels. */
export type ImageErrorReason = "unsupported-format" | "corrupt" | "empty" | "too-large";

/** A per-sample image failure: the pipeline skips the sample and counts `reason`. */
export class ImageDecodeError extends Error {
  constructor(readonly reason: ImageErrorReason, message: string) {
    super(message);
    this.name = "ImageDecodeError";
  }
}

/** Formats {@link decodeImage} accepts. */
export const DECODABLE_FORMATS: readonly ImageFormat[] = ["jpeg", "png", "gif"];

/** Largest image (in pixels) the decoder will accept by default; see {@link setMaxImagePixels}. */
export const MAX_IMAGE_PIXELS = 89_478_485; // Pillow's decompression-bomb threshold.

/** The flag that raises the pixel limit (CLIs parse it and call {@link setMaxImagePixels}). */
export const MAX_PIXELS_FLAG = "--max_image_pixels";

let maxPixels = MAX_IMAGE_PIXELS;

/** Set the pixel limit (`undefined` restores {@link MAX_IMAGE_PIXELS}). */
export function setMaxImagePixels(n: number | undefined): void {
  if (n !== undefined && !(Number.isSafeInteger(n) && n > 0)) {
    throw new Error(`${MAX_PIXELS_FLAG}: expected a positive integer, got ${n}`);
  }
  maxPixels = n ?? MAX_IMAGE_PIXELS;
}

/** The current pixel limit. */
export function maxImagePixels(): number {
  return maxPixels;
}

/**
 * Width and height read from the container header without decoding: PNG IHDR, the JPEG start
 * of frame (SOF0–SOF15, scanning marker segments), the GIF logical screen and its first image
 * descriptor (the larger of the two). Undefined when the header is truncated or not found.
 */
export function headerSize(
  bytes: Uint8Array,
  format: ImageFormat = sniffImageFormat(bytes),
): { width: number; height: number } | undefined {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = bytes.byteLength;
  if (format === "png") {
    // signature (8), chunk length (4), "IHDR" (4), width u32 BE, height u32 BE
    if (n < 24) return undefined;
    return { width: v.getUint32(16), height: v.getUint32(20) };
  }
  if (format === "gif") {
    if (n < 10) return undefined;
    let width = v.getUint16(6, true), height = v.getUint16(8, true);
    // Skip the global colour table and extensions up to the first image descriptor.
    let p = 13;
    if (bytes[10] & 0x80) p += 3 << ((bytes[10] & 7) + 1);
    while (p < n) {
      if (bytes[p] === 0x2c && p + 9 < n) {
        width = Math.max(width, v.getUint16(p + 1, true) + v.getUint16(p + 5, true));
        height = Math.max(height, v.getUint16(p + 3, true) + v.getUint16(p + 7, true));
        break;
      }
      if (bytes[p] !== 0x21) break;
      p += 2; // extension introducer + label, then sub-blocks
      while (p < n && bytes[p] !== 0) p += bytes[p] + 1;
      p++;
    }
    return { width, height };
  }
  if (format === "jpeg") {
    let p = 2;
    while (p + 4 <= n) {
      if (bytes[p] !== 0xff) return undefined;
      const m = bytes[p + 1];
      if (m === 0xff) {
        p++; // fill byte
        continue;
      }
      if (m === 0xd8 || m === 0x01 || (m >= 0xd0 && m <= 0xd7)) {
        p += 2; // markers without a length
        continue;
      }
      const len = v.getUint16(p + 2);
      const isSof = m >= 0xc0 && m <= 0xcf && m !== 0xc4 && m !== 0xc8 && m !== 0xcc;
      if (isSof) {
        if (p + 9 > n) return undefined;
        return { width: v.getUint16(p + 7), height: v.getUint16(p + 5) };
      }
      if (m === 0xda || len < 2) return undefined; // scan data before any frame header
      p += 2 + len;
    }
  }
  return undefined;
}

/** Throws the "too large" {@link ImageDecodeError} when `width × height` exceeds the limit. */
export function checkImageSize(width: number, height: number, what = "image"): void {
  if (width * height > maxPixels) {
    throw new ImageDecodeError(
      "too-large",
      `${what} too large: ${width}×${height} > limit ${maxPixels} pixels ` +
        `(raise with ${MAX_PIXELS_FLAG})`,
    );
  }
}

/** Identifies an encoded image by its leading bytes. */
export function sniffImageFormat(bytes: Uint8Array): ImageFormat {
  const b = bytes;
  const ascii = (at: number, s: string) => {
    if (b.length < at + s.length) return false;
    for (let i = 0; i < s.length; i++) if (b[at + i] !== s.charCodeAt(i)) return false;
    return true;
  };
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return "jpeg";
  if (ascii(0, "\x89PNG\r\n\x1a\n")) return "png";
  if (ascii(0, "GIF87a") || ascii(0, "GIF89a")) return "gif";
  if (ascii(0, "RIFF") && ascii(8, "WEBP")) return "webp";
  if (ascii(0, "BM")) return "bmp";
  if (ascii(0, "II*\0") || ascii(0, "MM\0*")) return "tiff";
  if (ascii(4, "ftyp")) {
    if (ascii(8, "avif") || ascii(8, "avis")) return "avif";
    if (ascii(8, "heic") || ascii(8, "heix") || ascii(8, "mif1") || ascii(8, "msf1")) {
      return "heic";
    }
  }
  return "unknown";
}

/**
 * Decodes JPEG/PNG/GIF bytes to RGB. Alpha is composited over white; gray, palette and CMYK
 * sources come out as RGB.
 *
 * @throws {ImageDecodeError} for empty input, an unsupported container, or undecodable bytes.
 */
export async function decodeImage(bytes: Uint8Array): Promise<RgbImage> {
  if (bytes.length === 0) throw new ImageDecodeError("empty", "image bytes are empty");
  const format = sniffImageFormat(bytes);
  if (!DECODABLE_FORMATS.includes(format)) {
    const what = format === "unknown" ? "unrecognised bytes" : format;
    throw new ImageDecodeError(
      "unsupported-format",
      `unsupported image format: ${what} (only JPEG, PNG and GIF are decoded)`,
    );
  }
  const header = headerSize(bytes, format);
  if (header) checkImageSize(header.width, header.height, `${format.toUpperCase()} image`);
  let rgba: Uint8Array | Uint8ClampedArray, width: number, height: number;
  try {
    const { decode: decodeAny, GIF, Image } = await decoder();
    const decoded = await decodeAny(bytes, true);
    if (decoded instanceof GIF) {
      const frame = decoded[0];
      if (!frame) throw new Error("GIF has no frames");
      ({ width, height } = frame);
      rgba = frame.bitmap;
    } else if (decoded instanceof Image) {
      ({ width, height } = decoded);
      rgba = decoded.bitmap;
    } else {
      throw new Error("decoder returned no image");
    }
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    throw new ImageDecodeError("corrupt", `corrupt ${format.toUpperCase()} image: ${msg}`);
  }
  if (!(width > 0 && height > 0) || rgba.length < width * height * 4) {
    throw new ImageDecodeError(
      "corrupt",
      `corrupt ${format.toUpperCase()} image: decoded size ${width}x${height}`,
    );
  }
  checkImageSize(width, height, `${format.toUpperCase()} image`);
  return rgbaOverWhite(rgba, width, height);
}

/**
 * Composites RGBA pixels over an opaque white background:
 * `out = round((c·a + 255·(255 − a)) / 255)`.
 */
export function rgbaOverWhite(
  rgba: Uint8Array | Uint8ClampedArray,
  width: number,
  height: number,
): RgbImage {
  const n = width * height;
  const data = new Uint8Array(n * 3);
  for (let i = 0, j = 0; i < n; i++, j += 4) {
    const a = rgba[j + 3];
    if (a === 255) {
      data[i * 3] = rgba[j];
      data[i * 3 + 1] = rgba[j + 1];
      data[i * 3 + 2] = rgba[j + 2];
    } else {
      const bg = 255 * (255 - a);
      data[i * 3] = Math.round((rgba[j] * a + bg) / 255);
      data[i * 3 + 1] = Math.round((rgba[j + 1] * a + bg) / 255);
      data[i * 3 + 2] = Math.round((rgba[j + 2] * a + bg) / 255);
    }
  }
  return { width, height, data };
}

/** Checks an {@link RgbImage}'s shape, throwing a specific error when it is inconsistent. */
export function assertRgbImage(img: RgbImage): void {
  if (!Number.isInteger(img.width) || !Number.isInteger(img.height)) {
    throw new Error(`RGB image size must be integers, got ${img.width}x${img.height}`);
  }
  if (img.width <= 0 || img.height <= 0) {
    throw new Error(`RGB image must be non-empty, got ${img.width}x${img.height}`);
  }
  if (img.data.length !== img.width * img.height * 3) {
    throw new Error(
      `RGB image ${img.width}x${img.height} needs ${img.width * img.height * 3} bytes, ` +
        `got ${img.data.length}`,
    );
  }
}
