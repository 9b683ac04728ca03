/**
 * A small pool of Deno Workers that decode and preprocess images off the main thread, so the
 * thread that drives the GPU is never blocked on JPEG decoding or resampling.
 *
 * Jobs go to the worker with the fewest jobs in flight; results come back as transferred
 * Float32Arrays. A failed image rejects its own promise with an {@link ImageDecodeError} (same
 * `reason` as in-process decoding) and leaves the pool healthy. With `workers: 0` the pool runs
 * everything in-process (same results, no threads).
 *
 * @module
 */

import {
  ImageDecodeError,
  type ImageErrorReason,
  type ImageSource,
  maxImagePixels,
} from "./image.ts";
import { type ImageProcessorConfig, preprocessBytes, preprocessRgb } from "./image_processor.ts";
import type { ImageJob, ImageJobResult } from "./image_worker.ts";

interface Pending {
  resolve(p: Float32Array): void;
  reject(e: Error): void;
  worker: number;
}

/** Options of {@link ImagePool}. */
export interface ImagePoolOptions {
  /** Worker count; 0 = in-process. Default: min(4, max(1, hardwareConcurrency − 1)). */
  workers?: number;
}

/** Default worker count for this machine. */
export function defaultWorkerCount(): number {
  const cores = navigator.hardwareConcurrency ?? 2;
  return Math.min(4, Math.max(1, cores - 1));
}

/** Decodes + preprocesses images on a pool of workers. Call {@link ImagePool.close} when done. */
export class ImagePool {
  readonly size: number;
  #workers: Worker[] = [];
  #load: number[] = [];
  #pending = new Map<number, Pending>();
  #nextId = 1;
  #closed = false;

  constructor(opts: ImagePoolOptions = {}) {
    this.size = opts.workers ?? defaultWorkerCount();
    if (!Number.isInteger(this.size) || this.size < 0) {
      throw new Error(`ImagePool: workers must be an integer >= 0, got ${opts.workers}`);
    }
    for (let i = 0; i < this.size; i++) {
      this.#workers.push(this.#spawn(i));
      this.#load.push(0);
    }
  }

  #spawn(i: number): Worker {
    const w = new Worker(new URL("./image_worker.ts", import.meta.url), { type: "module" });
    w.onmessage = (ev: MessageEvent<ImageJobResult>) => this.#settle(ev.data);
    w.onerror = (ev) => {
      ev.preventDefault();
      this.#failWorker(i, new Error(`image worker ${i} crashed: ${ev.message}`));
    };
    return w;
  }

  /** Jobs submitted but not yet finished. */
  get inFlight(): number {
    return this.#pending.size;
  }

  /**
   * Decodes (when given bytes) and preprocesses one image to a `[3, S, S]` Float32Array.
   * Rejects with {@link ImageDecodeError} for unsupported or corrupt images.
   */
  process(src: ImageSource, cfg: ImageProcessorConfig): Promise<Float32Array> {
    if (this.#closed) return Promise.reject(new Error("ImagePool is closed"));
    if (this.size === 0) {
      return src instanceof Uint8Array
        ? preprocessBytes(src, cfg)
        : Promise.resolve().then(() => preprocessRgb(src, cfg));
    }
    let w = 0;
    for (let i = 1; i < this.size; i++) if (this.#load[i] < this.#load[w]) w = i;
    const id = this.#nextId++;
    // Copy before transferring: the caller keeps its sample intact.
    const maxPixels = maxImagePixels(); // workers have their own module state
    const job: ImageJob = src instanceof Uint8Array ? { id, cfg, maxPixels, bytes: src.slice() } : {
      id,
      cfg,
      maxPixels,
      rgb: { width: src.width, height: src.height, data: src.data.slice() },
    };
    const transfer = [(job.bytes ?? job.rgb!.data).buffer as ArrayBuffer];
    return new Promise<Float32Array>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, worker: w });
      this.#load[w]++;
      this.#workers[w].postMessage(job, transfer);
    });
  }

  #settle(r: ImageJobResult) {
    const p = this.#pending.get(r.id);
    if (!p) return;
    this.#pending.delete(r.id);
    this.#load[p.worker]--;
    if (r.pixels) p.resolve(r.pixels);
    else {
      const err = r.error ?? { reason: "error", message: "image worker returned nothing" };
      const known = ["unsupported-format", "corrupt", "empty", "too-large"];
      p.reject(
        known.includes(err.reason)
          ? new ImageDecodeError(err.reason as ImageErrorReason, err.message)
          : new Error(err.message),
      );
    }
  }

  /** A crashed worker's jobs fail; the worker is replaced so the pool keeps its size. */
  #failWorker(index: number, e: Error) {
    for (const [id, p] of this.#pending) {
      if (p.worker !== index) continue;
      this.#pending.delete(id);
      p.reject(e);
    }
    this.#load[index] = 0;
    this.#workers[index].terminate();
    if (!this.#closed) this.#workers[index] = this.#spawn(index);
  }

  /** Stops the workers; pending jobs are rejected. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const w of this.#workers) w.terminate();
    for (const p of this.#pending.values()) p.reject(new Error("ImagePool closed"));
    this.#pending.clear();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
