// Training and evaluation data for the trainer: a dataset (data_path) → encoded samples
// (processor: ids + labels; images preprocessed, in workers when the pool has any) → collated
// micro-batches, cycling passes, with a resumable position.
//
// The position stored in a checkpoint is the dataset state *after the last batch the trainer
// consumed* (each batch carries it), so prefetched-but-unused batches never skip data on resume.
//
// Splits (as the original: select(max_samples), then hold out max_eval_samples): the eval set is
// the first E usable samples of a second instance of the dataset, and the training stream skips
// those E samples at the start of every pass. The generated `shapes` data is infinite, so its
// eval set is drawn from an independent seed instead.

import { collate, type CollateOptions, fitToLength } from "../data/collator.ts";
import type { EncodedSample } from "../data/collator.ts";
import { ImagePool } from "../data/image_pool.ts";
import type { SiqvlProcessor } from "../data/processor.ts";
import { LlavaDataset } from "../data/datasets/llava.ts";
import { QUESTION_KINDS, type QuestionKind, ShapesDataset } from "../data/datasets/shapes.ts";
import { FineVisionDataset } from "../data/datasets/finevision.ts";
import { cachedHubClient } from "../data/datasets/hub_cache.ts";
import { splitTrainEval } from "../data/datasets/split.ts";
import type { Dataset, DatasetState, JsonValue, Sample } from "../data/datasets/types.ts";
import { SkipCounter } from "../data/datasets/types.ts";
import type { SiqvlBatchData } from "./model_adapter.ts";

/** Options of {@link openDatasets}. */
export interface DataSpec {
  dataPath: string;
  subSets: string[];
  subSetsWeights: number[] | null;
  seed: number;
  maxSamples: number | null;
  maxEvalSamples: number;
  imageSize: number;
}

/** Train and eval datasets for `--data_path`. */
export async function openDatasets(
  spec: DataSpec,
): Promise<{ train: Dataset; eval: Dataset | null; description: string }> {
  const E = spec.maxEvalSamples;
  const p = spec.dataPath;
  if (p === "shapes" || p.startsWith("shapes:")) {
    // shapes[:<image size>[:<question kinds, comma-separated; repeating one weights it>]]
    const [, sz, kindList] = p.split(":");
    const size = sz ? Number(sz) : spec.imageSize;
    if (!Number.isInteger(size) || size < 16) throw new Error(`--data_path ${p}: bad image size`);
    const kinds = kindList ? kindList.split(",") as QuestionKind[] : undefined;
    if (kinds?.some((k) => !QUESTION_KINDS.includes(k))) {
      throw new Error(`--data_path ${p}: question kinds are ${QUESTION_KINDS.join(", ")}`);
    }
    const train = new ShapesDataset({
      seed: spec.seed,
      imageSize: size,
      length: spec.maxSamples ?? undefined,
      kinds,
    });
    const ev = E > 0
      ? new ShapesDataset({
        seed: (spec.seed ^ 0x5eed1e55) >>> 0,
        imageSize: size,
        length: E,
        kinds,
      })
      : null;
    return { train, eval: ev, description: `generated shapes (${size}px, seed ${spec.seed})` };
  }
  const split = { maxSamples: spec.maxSamples ?? undefined, maxEvalSamples: E };
  if (/\.jsonl?$/i.test(p)) {
    const { train, eval: ev } = await splitTrainEval(
      () => LlavaDataset.load({ file: p, seed: spec.seed }),
      split,
    );
    return { train, eval: ev ?? null, description: `LLaVA-style ${p}` };
  }
  // FineVision: a local folder of <subset>/*.parquet, else a hub dataset repo (downloaded once
  // into the Hugging Face cache, as training reads every shard once per pass).
  const isDir = await Deno.stat(p).then((st) => st.isDirectory, () => false);
  const location = isDir ? { dir: p } : { hub: cachedHubClient(), repo: p };
  const { train, eval: ev } = await splitTrainEval(
    () =>
      FineVisionDataset.open({
        location,
        subsets: spec.subSets,
        weights: spec.subSetsWeights ?? undefined,
        seed: spec.seed,
      }),
    split,
  );
  return {
    train,
    eval: ev ?? null,
    description: `FineVision ${p} (${spec.subSets.join(", ")})`,
  };
}

/** A collated batch with the data position after it and the raw questions/answers. */
export interface LoadedBatch {
  data: SiqvlBatchData;
  stateAfter: LoaderState;
  questions: string[];
  answers: string[];
  ids: string[];
}

/** Loader position: dataset state + pass number + skip counts. */
export interface LoaderState {
  epoch: number;
  dataset: DatasetState;
  skips: { [k: string]: JsonValue };
  [k: string]: JsonValue;
}

/** Options of {@link BatchLoader}. */
export interface LoaderOptions {
  dataset: Dataset;
  processor: SiqvlProcessor;
  batchSize: number;
  maxLength?: number;
  /** Batches prepared ahead (0 = none). */
  prefetch?: number;
  /** Images preprocessed in this many workers (0 = in-process). */
  imageWorkers?: number;
  /** Cycle passes forever (training) or stop after one (eval). */
  cycle: boolean;
}

/** Samples → micro-batches, with a resumable position. */
export class BatchLoader {
  readonly opts: LoaderOptions;
  readonly pool: ImagePool;
  readonly skips = new SkipCounter();
  #epoch = 0;
  #queue: Promise<LoadedBatch | null>[] = [];
  #producing: Promise<unknown> = Promise.resolve();
  #exhausted = false;
  #emptyPass = true;
  #closed = false;
  /** Usable samples in the current pass (a pass with none is an error, not a busy loop). */
  #usedThisPass = 0;

  constructor(opts: LoaderOptions) {
    this.opts = opts;
    this.pool = new ImagePool({ workers: opts.imageWorkers ?? 0 });
  }

  get epoch(): number {
    return this.#epoch;
  }

  #collateOptions(): CollateOptions {
    const p = this.opts.processor;
    return {
      ids: {
        pad: p.ids.pad,
        visionStart: p.ids.visionStart,
        visionEnd: p.ids.visionEnd,
        imagePad: p.ids.imagePad,
      },
      imageSize: p.image.size,
      maxLength: this.opts.maxLength,
      tokensPerImage: p.tokensPerImage,
    };
  }

  async #nextSample(): Promise<Sample | null> {
    for (;;) {
      const s = await this.opts.dataset.next();
      if (s) {
        this.#emptyPass = false;
        return s;
      }
      if (!this.opts.cycle) return null;
      if (this.#emptyPass || this.#usedThisPass === 0) {
        throw new Error(
          `dataset ${this.opts.dataset.name}: a whole pass gave no usable sample` +
            (this.skips.total ? ` (skipped: ${this.skips.report().replace(/\n/g, "; ")})` : ""),
        );
      }
      this.#epoch++;
      this.#emptyPass = true;
      this.#usedThisPass = 0;
      this.opts.dataset.rewind(this.#epoch);
    }
  }

  async #produce(): Promise<LoadedBatch | null> {
    if (this.#exhausted) return null;
    const co = this.#collateOptions();
    const encoded: EncodedSample[] = [];
    while (encoded.length < this.opts.batchSize) {
      if (this.#closed) return null;
      const s = await this.#nextSample();
      if (!s) {
        this.#exhausted = true;
        break;
      }
      let enc;
      try {
        enc = this.opts.processor.encodeSample(s);
      } catch (e) {
        this.skips.add("encode", `${s.id}: ${(e as Error).message}`);
        continue;
      }
      let px: Float32Array;
      try {
        px = await this.pool.process(s.image, this.opts.processor.image);
      } catch (e) {
        this.skips.add("image", `${s.id}: ${(e as Error).message}`);
        continue;
      }
      const es: EncodedSample = {
        inputIds: enc.inputIds,
        labels: enc.labels,
        pixelValues: [px],
        id: s.id,
        question: s.question,
        answer: s.answer,
      };
      const fit = fitToLength(es, co);
      if (!fit.ok) {
        this.skips.add("length", `${s.id}: ${fit.reason}`);
        continue;
      }
      encoded.push(fit.sample);
      this.#usedThisPass++;
    }
    if (!encoded.length) return null;
    const b = collate(encoded, co);
    const stateAfter: LoaderState = {
      epoch: this.#epoch,
      dataset: this.opts.dataset.state(),
      skips: this.skips.toJSON(),
    };
    return {
      data: {
        batch: b.size,
        seqLen: b.seqLen,
        inputIds: b.inputIds,
        attentionMask: b.attentionMask,
        labels: b.labels!,
        pixels: b.pixelValues,
        pixelShape: b.pixelShape,
      },
      stateAfter,
      questions: b.questions.map((q) => q ?? ""),
      answers: b.answers.map((a) => a ?? ""),
      ids: b.ids.map((i) => i ?? ""),
    };
  }

  #enqueue(): void {
    const p = this.#producing.then(() => (this.#closed ? null : this.#produce()));
    this.#producing = p.catch(() => {});
    this.#queue.push(p);
  }

  /** The next batch (null when a non-cycling loader is exhausted). */
  next(): Promise<LoadedBatch | null> {
    if (this.#closed) return Promise.resolve(null);
    const ahead = Math.max(0, this.opts.prefetch ?? 0);
    while (this.#queue.length < ahead + 1) this.#enqueue();
    const p = this.#queue.shift()!;
    if (ahead > 0) this.#enqueue();
    return p;
  }

  /** Continue after `state` (the `stateAfter` of the last consumed batch). */
  async restore(state: LoaderState): Promise<void> {
    // Let batches in flight finish before their dataset position is overwritten.
    await Promise.allSettled(this.#queue);
    this.#queue = [];
    this.#epoch = state.epoch;
    this.opts.dataset.rewind(state.epoch);
    this.opts.dataset.restore(state.dataset);
    this.skips.load(state.skips);
    this.#exhausted = false;
    this.#emptyPass = false;
    this.#usedThisPass = 1; // the position came from a pass that had usable samples
  }

  /** Stop producing (batches in flight resolve to null) and release the image workers. */
  close(): void {
    this.#closed = true;
    this.pool.close();
  }
}
