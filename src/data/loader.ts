/**
 * The data loader: dataset → processor (ids, labels) → image pool (pixels) → collated batches.
 *
 * Samples are read from the dataset strictly in order and their images are decoded ahead on the
 * worker pool (`prefetch` samples in flight, refilled in the background between `next()` calls)
 * so the GPU does not wait on JPEG decoding. Whether a sample is usable never depends on timing,
 * so batches are the same at any prefetch depth.
 *
 * Resuming: `state()` is the dataset position right after the last sample of the last returned
 * batch (not after the prefetched ones) plus the pass number and the skip counts, so
 * `restore(state)` continues with exactly the next batch. Passes repeat up to `epochs`.
 *
 * Skips: corrupt or unsupported images, conversations the processor rejects and sequences that
 * do not fit `maxLength` are counted in `skips` by reason (the dataset's own skips are in
 * `dataset.skips`); {@link DataLoader.report} prints both.
 *
 * @module
 */

import {
  type Batch,
  collate,
  type CollateOptions,
  type EncodedSample,
  fitToLength,
} from "./collator.ts";
import type { Dataset, DatasetState, JsonValue, Sample } from "./datasets/types.ts";
import { SkipCounter } from "./datasets/types.ts";
import { ImageDecodeError } from "./image.ts";
import type { ImagePool } from "./image_pool.ts";
import { preprocessBytes, preprocessRgb } from "./image_processor.ts";
import type { SiqvlProcessor } from "./processor.ts";

/** Options of {@link DataLoader}. */
export interface LoaderOptions {
  dataset: Dataset;
  processor: SiqvlProcessor;
  batchSize: number;
  /** Image decoding; without a pool images are processed in-process. */
  pool?: ImagePool;
  /** Longest token row; longer samples are cut (never inside the image run) or dropped. */
  maxLength?: number;
  /** Over-long samples: "truncate" (default) or "drop" (counted as too long). */
  overLong?: "truncate" | "drop";
  /** Samples decoded ahead (default 2 × batchSize). */
  prefetch?: number;
  /** Passes over the dataset (default unbounded). */
  epochs?: number;
  /** Keep the final short batch of the last pass (default true). */
  keepLast?: boolean;
}

/** Loader position (JSON). */
export interface LoaderState extends DatasetState {
  epoch: number;
  dataset: DatasetState;
  skips: JsonValue;
}

type Outcome = { ok: true; sample: EncodedSample } | { ok: false; reason: string; detail: string };

interface Entry {
  outcome: Promise<Outcome>;
  /** Dataset position and pass after this sample was read. */
  after: DatasetState;
  epoch: number;
}

/** Batches of encoded samples with images (see module docs). */
export class DataLoader {
  readonly skips: SkipCounter = new SkipCounter();
  readonly dataset: Dataset;
  readonly batchSize: number;
  readonly #processor: SiqvlProcessor;
  readonly #pool: ImagePool | undefined;
  readonly #collate: CollateOptions;
  readonly #prefetch: number;
  readonly #epochs: number;
  readonly #keepLast: boolean;
  #queue: Entry[] = [];
  #epoch = 0;
  /** Samples kept in the pass being consumed (a pass that keeps none is an error). */
  #keptThisPass = 0;
  #closed = false;
  #readEpoch = 0;
  #ended = false;
  #committed: { after: DatasetState; epoch: number } | undefined;
  #filling: Promise<void> | undefined;
  #fillError: Error | undefined;
  readonly #initial: DatasetState;

  constructor(opts: LoaderOptions) {
    if (!Number.isInteger(opts.batchSize) || opts.batchSize <= 0) {
      throw new Error(`batchSize must be a positive integer, got ${opts.batchSize}`);
    }
    this.dataset = opts.dataset;
    this.batchSize = opts.batchSize;
    this.#processor = opts.processor;
    this.#pool = opts.pool;
    this.#prefetch = Math.max(1, opts.prefetch ?? 2 * opts.batchSize);
    this.#epochs = opts.epochs ?? Infinity;
    this.#keepLast = opts.keepLast ?? true;
    const p = opts.processor;
    this.#initial = opts.dataset.state();
    this.#collate = {
      ids: p.ids,
      imageSize: p.image.size,
      maxLength: opts.maxLength,
      overLong: opts.overLong,
      tokensPerImage: p.tokensPerImage,
    };
  }

  /** Encodes one sample: text now, pixels on the pool. */
  #encode(s: Sample): Promise<Outcome> {
    let text;
    try {
      text = this.#processor.encodeSample(s);
    } catch (e) {
      return Promise.resolve({ ok: false, reason: "bad conversation", detail: `${s.id}: ${e}` });
    }
    const fit = fitToLength({ inputIds: text.inputIds, labels: text.labels, pixelValues: [] }, {
      ...this.#collate,
      tokensPerImage: undefined,
    });
    if (!fit.ok) {
      const reason = fit.reason.startsWith("max_length") ? "too long" : "bad encoding";
      return Promise.resolve({ ok: false, reason, detail: `${s.id}: ${fit.reason}` });
    }
    const cfg = this.#processor.image;
    const img = s.image;
    const pixels = this.#pool
      ? this.#pool.process(img, cfg)
      : img instanceof Uint8Array
      ? preprocessBytes(img, cfg)
      : Promise.resolve().then(() => preprocessRgb(img, cfg));
    return pixels.then(
      (px): Outcome => ({
        ok: true,
        sample: {
          inputIds: fit.sample.inputIds,
          labels: fit.sample.labels,
          pixelValues: [px],
          id: s.id,
          question: s.question,
          answer: s.answer,
        },
      }),
      (e): Outcome => {
        if (e instanceof ImageDecodeError) {
          return { ok: false, reason: `image ${e.reason}`, detail: `${s.id}: ${e.message}` };
        }
        return { ok: false, reason: "image error", detail: `${s.id}: ${e}` };
      },
    );
  }

  /** Reads samples in order until `prefetch` are queued or the data ends. */
  async #fill(): Promise<void> {
    while (!this.#ended && this.#queue.length < this.#prefetch) {
      let s = await this.dataset.next();
      if (!s) {
        if (this.#readEpoch + 1 >= this.#epochs) {
          this.#ended = true;
          break;
        }
        this.#readEpoch++;
        this.dataset.rewind(this.#readEpoch);
        s = await this.dataset.next();
        if (!s) {
          this.#ended = true; // an empty pass: nothing more will come
          break;
        }
      }
      const outcome = this.#encode(s);
      this.#queue.push({ outcome, after: this.dataset.state(), epoch: this.#readEpoch });
    }
  }

  /** Starts a background refill unless one is running; its error surfaces in `next()`. */
  #startFill(): void {
    if (this.#filling || this.#fillError) return;
    this.#filling = this.#fill()
      .catch((e) => {
        this.#fillError = e instanceof Error ? e : new Error(String(e));
      })
      .finally(() => {
        this.#filling = undefined;
      });
  }

  /** The next batch, or undefined when the data (all passes) is exhausted or after close(). */
  async next(): Promise<Batch | undefined> {
    if (this.#closed) return undefined;
    const kept: EncodedSample[] = [];
    while (kept.length < this.batchSize) {
      if (this.#queue.length === 0) {
        this.#startFill();
        await this.#filling;
        if (this.#fillError) throw this.#fillError;
        if (this.#queue.length === 0) break;
      }
      const entry = this.#queue.shift()!;
      this.#startFill();
      const out = await entry.outcome;
      if (entry.epoch !== this.#epoch) {
        if (this.#keptThisPass === 0) {
          throw new Error(
            `dataset ${this.dataset.name}: a whole pass gave no usable sample (${
              this.report().replace(/\n/g, "; ")
            })`,
          );
        }
        this.#keptThisPass = 0;
      }
      this.#committed = { after: entry.after, epoch: entry.epoch };
      this.#epoch = entry.epoch;
      if (out.ok) {
        kept.push(out.sample);
        this.#keptThisPass++;
      } else this.skips.add(out.reason, out.detail);
    }
    this.#startFill();
    if (kept.length === 0 || (kept.length < this.batchSize && !this.#keepLast)) return undefined;
    return collate(kept, this.#collate);
  }

  /** Async iteration over the remaining batches. */
  async *[Symbol.asyncIterator](): AsyncGenerator<Batch> {
    for (let b = await this.next(); b; b = await this.next()) yield b;
  }

  /** Position after the last returned batch (JSON). */
  state(): LoaderState {
    return {
      epoch: this.#committed?.epoch ?? this.#epoch,
      dataset: this.#committed?.after ?? this.#initial,
      skips: this.skips.toJSON(),
    };
  }

  /** Continues after the batch whose `state()` this was. */
  async restore(state: LoaderState): Promise<void> {
    await this.#filling;
    this.#fillError = undefined;
    // Let in-flight image jobs finish before forgetting them.
    await Promise.all(this.#queue.map((e) => e.outcome));
    this.#queue = [];
    this.dataset.restore(state.dataset);
    this.#epoch = this.#readEpoch = state.epoch;
    this.#committed = { after: state.dataset, epoch: state.epoch };
    this.skips.load(state.skips);
    this.#ended = false;
    this.#keptThisPass = 1; // the position came from a pass that had usable samples
  }

  /** Stops reading ahead; later `next()` calls return undefined. The pool belongs to the caller. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#ended = true;
    await this.#filling;
    await Promise.allSettled(this.#queue.map((e) => e.outcome));
    this.#queue = [];
  }

  /** Skip counts of the dataset and of the loader, one reason per line. */
  report(): string {
    const lines = [];
    const d = this.dataset.skips.report();
    const l = this.skips.report();
    if (d) lines.push(`dataset ${this.dataset.name} skipped ${this.dataset.skips.total}:\n${d}`);
    if (l) lines.push(`loader skipped ${this.skips.total}:\n${l}`);
    return lines.join("\n") || "nothing skipped";
  }
}
