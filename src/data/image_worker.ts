/**
 * Worker entry point of {@link ImagePool}: decodes and preprocesses one image per message.
 *
 * Request:  `{ id, cfg, bytes }` (encoded file) or `{ id, cfg, rgb: {width, height, data} }`.
 * Reply:    `{ id, pixels }` (a transferred `[3, S, S]` Float32Array) or
 *           `{ id, error: { reason, message } }`.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { ImageDecodeError, type RgbImage, setMaxImagePixels } from "./image.ts";
import { type ImageProcessorConfig, preprocessBytes, preprocessRgb } from "./image_processor.ts";

/** A job posted to the worker. */
export interface ImageJob {
  id: number;
  cfg: ImageProcessorConfig;
  /** The main thread's pixel limit. */
  maxPixels?: number;
  bytes?: Uint8Array;
  rgb?: RgbImage;
}

/** The worker's answer to one {@link ImageJob}. */
export interface ImageJobResult {
  id: number;
  pixels?: Float32Array;
  error?: { reason: string; message: string };
}

self.onmessage = async (ev: MessageEvent<ImageJob>) => {
  const job = ev.data;
  try {
    setMaxImagePixels(job.maxPixels);
    const pixels = job.bytes
      ? await preprocessBytes(job.bytes, job.cfg)
      : preprocessRgb(job.rgb!, job.cfg);
    const reply: ImageJobResult = { id: job.id, pixels };
    self.postMessage(reply, [pixels.buffer as ArrayBuffer]);
  } catch (e) {
    const reason = e instanceof ImageDecodeError ? e.reason : "error";
    const message = e instanceof Error ? e.message : String(e);
    const reply: ImageJobResult = { id: job.id, error: { reason, message } };
    self.postMessage(reply);
  }
};
