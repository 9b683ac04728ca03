// Running one task on a model: rows are read and turned into prompts, their images decoded on
// the image worker pool (the next batch while the GPU works on the current one), and each
// batch of prompts goes through one `generate()` call — left-padded into one KV cache, every
// row stopping on its own end-of-turn/EOS, the vision tower run once over the batch's distinct
// images in the prefill (rows about the same image share its features). Predictions are decoded without special tokens, trimmed (as lmms-eval strips
// generated text), reduced to their final answer by the task's reasoning format, and scored.

import { createHash } from "node:crypto";
import type { ImageSource } from "../data/image.ts";
import { extractAnswer, type ReasoningFormat } from "../data/reasoning.ts";
import type { ImagePool } from "../data/image_pool.ts";
import type { SiqvlProcessor } from "../data/processor.ts";
import { generate } from "../infer/generate.ts";
import type { SiqvlModel } from "../models/siqvl.ts";
import { noGrad, Tensor } from "../tensor/tensor.ts";
import {
  checkColumns,
  ImageIndex,
  openSplit,
  type SplitOptions,
  type TableSource,
  textOf,
} from "./dataset.ts";
import { rowToItem, type TaskItem } from "./doc.ts";
import type { EvalDoc, SampleScore } from "./metrics.ts";
import type { LoadedTask } from "./task.ts";

/** Options of {@link runTask}. */
export interface RunOptions {
  /** Rows read at most (default all). */
  limit?: number;
  /** Prompts per generate() call (default 8). */
  batchSize?: number;
  pool: ImagePool;
  /** Overrides the task's reasoning format. */
  reasoningFormat?: ReasoningFormat;
  /** Overrides the task's max_new_tokens. */
  maxNewTokens?: number;
  split?: SplitOptions;
  /** Called after each batch with the samples done so far and the total. */
  onProgress?: (done: number, total: number) => void;
  /** Called with each scored sample, in order. */
  onSample?: (s: SampleRecord) => void;
}

/** One scored question (a line of the per-sample JSONL). */
export interface SampleRecord {
  task: string;
  id: string;
  question: string;
  references: string[];
  choices?: string[];
  answer?: string;
  category?: string;
  /** The generated text (trimmed). */
  raw: string;
  /** The final answer scored (after the reasoning format). */
  prediction: string;
  /** metric spec → its score of this sample (and what it read). */
  scores: Record<string, SampleScore>;
  /** The first metric's score. */
  score: number;
  finish: "stop" | "length";
  tokens: number;
}

/** A task's outcome (one entry of results.json). */
export interface TaskResult {
  task: string;
  file: string;
  task_hash: string;
  data: string;
  metrics: Record<string, number>;
  metric_specs: string[];
  n: number;
  seconds: number;
  questions_per_second: number;
  generated_tokens: number;
  tokens_per_second: number;
  /** Images run through the vision tower (rows sharing an image in a batch count once). */
  images_encoded: number;
  batch_size: number;
  limit: number | null;
  generation: LoadedTask["spec"]["generation"];
  reasoning_format: ReasoningFormat;
}

interface Prepared {
  items: TaskItem[];
  /** The batch's distinct images, [3, S, S] each. */
  pixels: Promise<Float32Array[]>;
  /** Row → its image in `pixels`, when some rows share one. */
  imageIndex?: number[];
}

/** A content key of an image (rows of one image share its key). */
function imageKey(img: ImageSource): string {
  const h = createHash("sha1");
  if (img instanceof Uint8Array) h.update(img);
  else h.update(`${img.width}x${img.height}:`).update(img.data);
  return h.digest("hex");
}

/** Run `task` on a model; returns the aggregate result and every scored sample. */
export async function runTask(
  bundle: { model: SiqvlModel; processor: SiqvlProcessor },
  task: LoadedTask,
  opts: RunOptions,
): Promise<{ result: TaskResult; samples: SampleRecord[] }> {
  const { model, processor } = bundle;
  const spec = task.spec;
  const bs = opts.batchSize ?? 8;
  if (!Number.isInteger(bs) || bs < 1) throw new Error(`batch size must be >= 1, got ${bs}`);
  const t0 = performance.now();
  const src = await openSplit(task, "dataset", opts.split);
  let join: ImageIndex | undefined;
  let joinSrc: TableSource | undefined;
  try {
    const columns = checkColumns(task, src);
    if (spec.join_images) {
      joinSrc = await openSplit(task, "join_images", opts.split);
      join = new ImageIndex(task, joinSrc);
    }
    const total = Math.min(opts.limit ?? Infinity, src.total);
    const rows = src.rows(columns, total);
    let index = 0;
    const nextBatch = async (): Promise<Prepared | undefined> => {
      const items: TaskItem[] = [];
      while (items.length < bs) {
        const r = await rows.next();
        if (r.done) break;
        const joined = join
          ? await join.get(textOf(r.value[spec.join_images!.key]) ?? "")
          : undefined;
        items.push(rowToItem(task, r.value, index++, joined));
      }
      if (!items.length) return undefined;
      // Rows showing the same image (POPE, GQA ask several questions per image) share one
      // decode and one vision-tower pass.
      const unique = new Map<string, number>();
      const first: TaskItem[] = [];
      const imageOf = items.map((it) => {
        const key = imageKey(it.image);
        let k = unique.get(key);
        if (k === undefined) {
          unique.set(key, k = first.length);
          first.push(it);
        }
        return k;
      });
      const pixels = Promise.all(
        first.map((it) =>
          opts.pool.process(it.image, processor.image).catch((e) => {
            throw new Error(`${task.file}: sample ${it.doc.id}: ${(e as Error).message}`);
          })
        ),
      );
      pixels.catch(() => {}); // awaited below; keep an early failure from being unhandled
      return { items, pixels, imageIndex: first.length < items.length ? imageOf : undefined };
    };

    const gen = spec.generation;
    const format = opts.reasoningFormat ?? spec.reasoning_format;
    const stop = processor.stopIds();
    const stopSet = new Set(stop);
    const S = processor.image.size;
    const samples: SampleRecord[] = [];
    const docs: EvalDoc[] = [];
    let generated = 0;
    let imagesEncoded = 0;
    const wasTraining = model.training;
    model.eval();
    try {
      let next = nextBatch();
      for (let batch = 0;; batch++) {
        const cur = await next;
        if (!cur) break;
        const pixels = await cur.pixels;
        next = nextBatch(); // read and decode the next batch while this one generates
        next.catch(() => {});
        const flat = new Float32Array(pixels.length * 3 * S * S);
        pixels.forEach((p, k) => flat.set(p, k * 3 * S * S));
        const px = noGrad(() => Tensor.from(model.gpu, flat, [pixels.length, 3, S, S], "f32"));
        try {
          const inputIds = cur.items.map((it) =>
            Array.from(processor.encodePrompt(it.prompt).inputIds)
          );
          imagesEncoded += pixels.length;
          const res = await generate(model, {
            inputIds,
            pixelValues: px,
            imageIndex: cur.imageIndex,
          }, {
            maxNewTokens: opts.maxNewTokens ?? gen.max_new_tokens,
            doSample: gen.temperature > 0,
            temperature: gen.temperature > 0 ? gen.temperature : undefined,
            numBeams: gen.num_beams,
            stopTokenIds: stop,
            padTokenId: processor.ids.pad,
            seed: gen.seed + batch * bs,
          });
          cur.items.forEach((it, k) => {
            const toks = res.tokens[k];
            generated += toks.length;
            const raw = processor.tokenizer.decode(toks.filter((t) => !stopSet.has(t)), {
              skipSpecialTokens: true,
            }).trim();
            const prediction = extractAnswer(raw, format);
            const scores: Record<string, SampleScore> = {};
            for (const m of task.metrics) scores[m.spec] = m.score(prediction, it.doc);
            const rec: SampleRecord = {
              task: spec.task,
              id: it.doc.id,
              question: it.prompt,
              references: it.doc.answers,
              choices: it.doc.choices,
              answer: it.doc.answer,
              category: it.doc.category,
              raw,
              prediction,
              scores,
              score: scores[task.metrics[0].spec].score,
              finish: res.finishReasons[k],
              tokens: toks.length,
            };
            samples.push(rec);
            docs.push(it.doc);
            opts.onSample?.(rec);
          });
        } finally {
          px.dispose();
        }
        opts.onProgress?.(samples.length, total);
      }
    } finally {
      model.train(wasTraining);
    }
    const metrics: Record<string, number> = {};
    for (const m of task.metrics) {
      const agg = m.aggregate(samples.map((s, i) => ({ score: s.scores[m.spec], doc: docs[i] })));
      Object.assign(metrics, agg);
    }
    const seconds = (performance.now() - t0) / 1000;
    return {
      result: {
        task: spec.task,
        file: task.file,
        task_hash: task.hash,
        data: src.where,
        metrics,
        metric_specs: task.metrics.map((m) => m.spec),
        n: samples.length,
        seconds,
        questions_per_second: samples.length / seconds,
        generated_tokens: generated,
        tokens_per_second: generated / seconds,
        images_encoded: imagesEncoded,
        batch_size: bs,
        limit: opts.limit ?? null,
        generation: gen,
        reasoning_format: format,
      },
      samples,
    };
  } finally {
    await src.close();
    await joinSrc?.close();
  }
}
