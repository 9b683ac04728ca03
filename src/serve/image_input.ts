// Images of a request: `data:` URLs (base64), or http(s) URLs when the server allows them
// (time and size limits), checked before decoding: the encoded size against a byte cap and the
// width × height from the file header against a pixel cap, so an image bomb is refused without
// being decoded.

import { headerSize, ImageDecodeError } from "../data/image.ts";
import { type ImageProcessorConfig, preprocessBytes } from "../data/image_processor.ts";
import { ApiError, badField } from "./protocol.ts";
import { readLimited } from "./read_limited.ts";

/** Limits on request images. */
export interface ImageLimits {
  /** Encoded bytes of one image. */
  maxBytes: number;
  /** width × height of one image. */
  maxPixels: number;
  /** Fetch http(s) URLs (off: only data: URLs). */
  allowRemote: boolean;
  /** Milliseconds a remote fetch may take. */
  fetchTimeoutMs: number;
}

/** Defaults: 20 MB, 40 MP, no remote images, 5 s (vLLM's image fetch timeout). */
export const DEFAULT_IMAGE_LIMITS: ImageLimits = {
  maxBytes: 20 * 1024 * 1024,
  maxPixels: 40_000_000,
  allowRemote: false,
  fetchTimeoutMs: 5000,
};

function decodeBase64(s: string, param: string): Uint8Array {
  try {
    const bin = atob(s.replace(/\s+/g, ""));
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  } catch {
    throw badField(param, "the data: URL is not valid base64");
  }
}

/** The encoded bytes behind an image URL. */
export async function fetchImageBytes(
  url: string,
  limits: ImageLimits,
  param: string,
): Promise<Uint8Array> {
  const big = () =>
    new ApiError(413, `${param}: image exceeds ${limits.maxBytes} bytes`, undefined, null, param);
  if (url.startsWith("data:")) {
    const comma = url.indexOf(",");
    if (comma < 0) throw badField(param, "malformed data: URL (no comma)");
    const meta = url.slice(5, comma);
    if (!/;base64$/i.test(meta)) throw badField(param, "only base64 data: URLs are accepted");
    const payload = url.slice(comma + 1);
    if (payload.length * 0.75 > limits.maxBytes + 3) throw big();
    const bytes = decodeBase64(payload, param);
    if (bytes.length > limits.maxBytes) throw big();
    return bytes;
  }
  if (!/^https?:\/\//i.test(url)) {
    throw badField(param, "expected a data: URL or an http(s) URL");
  }
  if (!limits.allowRemote) {
    throw badField(param, "remote image URLs are disabled on this server (--allow_remote_images)");
  }
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), limits.fetchTimeoutMs);
  try {
    const res = await fetch(url, { signal: ctl.signal, headers: { "user-agent": "siqvl-serve" } });
    if (!res.ok) {
      await res.body?.cancel();
      throw badField(param, `fetching the image gave HTTP ${res.status}`);
    }
    return await readLimited(res.body, limits.maxBytes, res.headers.get("content-length"), big);
  } catch (e) {
    if (e instanceof ApiError) throw e;
    if (ctl.signal.aborted) {
      throw badField(param, `fetching the image took longer than ${limits.fetchTimeoutMs} ms`);
    }
    throw badField(param, `fetching the image failed: ${(e as Error).message}`);
  } finally {
    clearTimeout(timer);
  }
}

/** Fetch, check and preprocess one image → f32 [3, S, S]. */
export async function loadRequestImage(
  url: string,
  limits: ImageLimits,
  cfg: ImageProcessorConfig,
  param: string,
): Promise<Float32Array> {
  const bytes = await fetchImageBytes(url, limits, param);
  const size = headerSize(bytes);
  if (size && size.width * size.height > limits.maxPixels) {
    throw badField(
      param,
      `image of ${size.width}x${size.height} pixels exceeds the ${limits.maxPixels}-pixel limit`,
    );
  }
  try {
    return await preprocessBytes(bytes, cfg);
  } catch (e) {
    if (e instanceof ImageDecodeError) {
      throw badField(param, `cannot decode the image: ${e.message}`);
    }
    throw e;
  }
}
