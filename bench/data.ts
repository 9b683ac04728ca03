/**
 * Data-pipeline throughput: 640×480 JPEG → 224² tower input (decode + Pillow-style bicubic
 * resize + normalise), in-process and on the worker pool, and whole-loader samples/s (text
 * encoding with the real Qwen tokenizer, images on the pool, collation).
 *
 *   deno run -A bench/data.ts [--seconds 3] [--workers 1,2,4]
 *
 * Prints a table; numbers depend on the machine and on what else is running.
 */

import { Image } from "imagescript";
import { parseArgs } from "node:util";
import {
  type Dataset,
  type DatasetState,
  type Sample,
  SkipCounter,
} from "../src/data/datasets/types.ts";
import { ShapesDataset } from "../src/data/datasets/shapes.ts";
import { decodeImage } from "../src/data/image.ts";
import { ImagePool } from "../src/data/image_pool.ts";
import { defaultImageProcessorConfig, preprocessRgb } from "../src/data/image_processor.ts";
import { DataLoader } from "../src/data/loader.ts";
import { SiqvlProcessor } from "../src/data/processor.ts";
import { BICUBIC, resizeRgb } from "../src/data/resize.ts";
import { qwenTokenizer } from "../tests/fixtures/data/qwen_tokenizer.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { seconds: { type: "string", default: "3" }, workers: { type: "string" } },
});
const seconds = Number(values.seconds);
const cores = navigator.hardwareConcurrency ?? 2;
const workerCounts = (values.workers ?? [1, 2, 4].filter((w) => w <= Math.max(cores, 1)).join(","))
  .split(",").map(Number);

/** A 640×480 photo-like JPEG: gradients, discs and noise. */
async function makeJpeg(seed: number): Promise<Uint8Array> {
  const img = new Image(640, 480);
  let s = seed;
  for (let y = 0; y < 480; y++) {
    for (let x = 0; x < 640; x++) {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      const n = (s >>> 28) - 8;
      const d = Math.hypot(x - 320 - 100 * Math.sin(seed), y - 240) < 120 ? 80 : 0;
      const r = Math.min(255, Math.max(0, (x * 255) / 640 + n + d));
      const g = Math.min(255, Math.max(0, (y * 255) / 480 + n));
      const b = Math.min(255, Math.max(0, 128 + 100 * Math.sin((x + y) / 40) + n - d));
      img.setPixelAt(x + 1, y + 1, Image.rgbaToColor(r, g, b, 255));
    }
  }
  return await img.encodeJPEG(90);
}

async function timeLoop(fn: () => Promise<number>): Promise<{ n: number; secs: number }> {
  const t0 = performance.now();
  let n = 0;
  while (performance.now() - t0 < seconds * 1000) n += await fn();
  return { n, secs: (performance.now() - t0) / 1000 };
}

const rows: [string, string, string][] = [];
const add = (what: string, rate: number, unit: string, note = "") =>
  rows.push([what, `${rate.toFixed(1)} ${unit}`, note]);

const jpegs = await Promise.all([1, 2, 3, 4].map(makeJpeg));
const cfg = defaultImageProcessorConfig(224);

// Stages, in-process.
let i = 0;
const dec = await timeLoop(async () => {
  await decodeImage(jpegs[i++ % jpegs.length]);
  return 1;
});
add("decode 640×480 JPEG", dec.n / dec.secs, "img/s", "imagescript, main thread");
const rgb = await decodeImage(jpegs[0]);
const rs = await timeLoop(() => {
  resizeRgb(rgb, 224, 224, BICUBIC);
  return Promise.resolve(1);
});
add("resize 640×480 → 224² bicubic", rs.n / rs.secs, "img/s", "Pillow-exact fixed point");
const full = await timeLoop(async () => {
  preprocessRgb(await decodeImage(jpegs[i++ % jpegs.length]), cfg);
  return 1;
});
add("decode+resize+normalise", full.n / full.secs, "img/s", "main thread");

// Worker pool, keeping 4 jobs per worker in flight.
for (const w of workerCounts) {
  const pool = new ImagePool({ workers: w });
  await pool.process(jpegs[0], cfg); // warm up (worker start)
  const r = await timeLoop(async () => {
    const batch = Array.from({ length: 4 * w }, () => pool.process(jpegs[i++ % jpegs.length], cfg));
    await Promise.all(batch);
    return batch.length;
  });
  pool.close();
  add(`pool, ${w} worker(s)`, r.n / r.secs, "img/s", `${cores} cores on this machine`);
}

// Whole loader: FineVision-like samples (640×480 JPEG + a question) and the shapes demo data.
const tok = await qwenTokenizer();
const processor = new SiqvlProcessor({ tokenizer: tok, tokensPerImage: 49, imageSize: 224 });

class JpegDataset implements Dataset {
  readonly name = "jpeg";
  readonly skips = new SkipCounter();
  #pos = 0;
  next(): Promise<Sample> {
    const k = this.#pos++;
    return Promise.resolve({
      id: `jpeg:${k}`,
      image: jpegs[k % jpegs.length],
      question: `Question ${k}: what can be seen in this picture, and where is the bright disc?`,
      answer: `Answer ${k}: a smooth colour gradient with a disc near the middle of the frame.`,
    });
  }
  rewind(): void {
    this.#pos = 0;
  }
  state(): DatasetState {
    return { pos: this.#pos };
  }
  restore(s: DatasetState): void {
    this.#pos = s.pos as number;
  }
}

const enc = await timeLoop(() => {
  processor.encodeSample({ question: "What is shown here in detail?", answer: "A picture." });
  return Promise.resolve(1);
});
add("text encode + labels (49 pads)", enc.n / enc.secs, "samples/s", "Qwen BPE, jinja");

const w = Math.max(...workerCounts);
for (
  const [name, dataset, proc] of [
    ["loader, 640×480 JPEG → 224², bs 8", new JpegDataset(), processor],
    [
      "loader, shapes 64² → 64², bs 8",
      new ShapesDataset({ seed: 0, imageSize: 64 }),
      new SiqvlProcessor({ tokenizer: tok, tokensPerImage: 16, imageSize: 64 }),
    ],
  ] as const
) {
  const pool = new ImagePool({ workers: w });
  const loader = new DataLoader({ dataset, processor: proc, batchSize: 8, pool, prefetch: 32 });
  await loader.next();
  const r = await timeLoop(async () => (await loader.next())!.batch);
  pool.close();
  add(name, r.n / r.secs, "samples/s", `${w} worker(s)`);
}

const width = [36, 18];
console.log(`${"stage".padEnd(width[0])} ${"throughput".padStart(width[1])}  note`);
console.log(`${"-".repeat(width[0])} ${"-".repeat(width[1])}  ----`);
for (const [a, b, c] of rows) console.log(`${a.padEnd(width[0])} ${b.padStart(width[1])}  ${c}`);
