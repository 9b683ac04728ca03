// End to end: every dataset kind → processor (real Qwen tokenizer) → image workers → batches
// that decode back to readable text with labels exactly on the answers; corrupt inputs skipped
// and counted; resuming a loader reproduces the following batches bit for bit.

import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Batch } from "../src/data/collator.ts";
import { FineVisionDataset } from "../src/data/datasets/finevision.ts";
import { LlavaDataset } from "../src/data/datasets/llava.ts";
import { ShapesDataset } from "../src/data/datasets/shapes.ts";
import type { Dataset } from "../src/data/datasets/types.ts";
import { ImagePool } from "../src/data/image_pool.ts";
import { labelSpans, renderLabeled } from "../src/data/inspect.ts";
import { DataLoader, type LoaderOptions } from "../src/data/loader.ts";
import { SiqvlProcessor } from "../src/data/processor.ts";
import { qwenTokenizer } from "./fixtures/data/qwen_tokenizer.ts";

const DATA = join(dirname(fileURLToPath(import.meta.url)), "fixtures", "data");
const tok = await qwenTokenizer();
const S = 16, N = 4;
const processor = new SiqvlProcessor({
  tokenizer: tok,
  tokensPerImage: N,
  imageSize: S,
  systemPrompt: "You look at pictures.",
});

async function allBatches(opts: LoaderOptions): Promise<{ loader: DataLoader; batches: Batch[] }> {
  const loader = new DataLoader(opts);
  const batches: Batch[] = [];
  for await (const b of loader) batches.push(b);
  return { loader, batches };
}

/** Checks one batch row by row and returns the rendered rows. */
function checkBatch(b: Batch, answersOf: (row: number) => string[]): string[] {
  const T = b.seqLen;
  assert.deepEqual(b.pixelShape, [b.imagesPerSample.reduce((a, c) => a + c, 0), 3, S, S]);
  assert.equal(b.pixels.length, b.pixelShape.reduce((a, c) => a * c, 1));
  for (const v of b.pixels) assert.ok(v >= -1 && v <= 1, `pixel ${v} in [-1, 1]`);
  const rendered: string[] = [];
  for (let r = 0; r < b.batch; r++) {
    const ids = b.inputIds.subarray(r * T, (r + 1) * T);
    const labels = b.labels!.subarray(r * T, (r + 1) * T);
    const mask = b.attentionMask.subarray(r * T, (r + 1) * T);
    const len = b.lengths[r];
    for (let t = 0; t < T; t++) {
      assert.equal(mask[t], t < len ? 1 : 0);
      if (t >= len) {
        assert.equal(ids[t], 151643, "padding is <|endoftext|>");
        assert.equal(labels[t], -100, "no loss on padding");
      }
    }
    assert.equal(ids.subarray(0, len).filter((i) => i === 151655).length, N);
    const spans = labelSpans(tok, ids.subarray(0, len), labels.subarray(0, len));
    assert.deepEqual(spans, answersOf(r).map((a) => `${a}<|im_end|>`), `row ${b.ids[r]}`);
    const text = renderLabeled(tok, ids, labels, mask);
    assert.ok(text.startsWith("<|im_start|>system\nYou look at pictures.<|im_end|>\n"));
    assert.ok(text.includes(`<|vision_start|><|image_pad|>×${N}<|vision_end|>`));
    assert.ok(text.endsWith("<|im_end|>⟧\n"), text);
    rendered.push(text);
  }
  return rendered;
}

Deno.test("pipeline: shapes batches round-trip to text with labels on the answers", async () => {
  const dataset = new ShapesDataset({ seed: 1, imageSize: 32, length: 10 });
  const { batches, loader } = await allBatches({ dataset, processor, batchSize: 4, epochs: 1 });
  assert.deepEqual(batches.map((b) => b.batch), [4, 4, 2]);
  const rendered = batches.flatMap((b) => checkBatch(b, (r) => [b.answers[r]!]));
  const again = new ShapesDataset({ seed: 1, imageSize: 32, length: 10 });
  const first = (await again.next())!;
  assert.equal(
    rendered[0],
    "<|im_start|>system\nYou look at pictures.<|im_end|>\n<|im_start|>user\n" +
      `<|vision_start|><|image_pad|>×${N}<|vision_end|>\n${first.question}<|im_end|>\n` +
      `<|im_start|>assistant\n⟦${first.answer}<|im_end|>⟧\n`,
  );
  assert.equal(loader.report(), "nothing skipped");
});

Deno.test("pipeline: FineVision batches, corrupt and unsupported images skipped and counted", async () => {
  const pool = new ImagePool({ workers: 2 });
  try {
    const dataset = await FineVisionDataset.open({
      location: { dir: join(DATA, "finevision") },
      subsets: ["alpha"],
      turns: "all",
    });
    const { batches, loader } = await allBatches({
      dataset,
      processor,
      batchSize: 2,
      pool,
      epochs: 1,
    });
    const rows = batches.flatMap((b) => b.ids);
    assert.deepEqual(rows, [
      "finevision:alpha/train-00000-of-00002.parquet#0",
      "finevision:alpha/train-00000-of-00002.parquet#1",
      "finevision:alpha/train-00000-of-00002.parquet#5",
      "finevision:alpha/train-00001-of-00002.parquet#0",
      "finevision:alpha/train-00001-of-00002.parquet#1",
    ]);
    const answers: Record<string, string[]> = {
      "#0": ["A colourful striped pattern.", "Mostly red, green and blue stripes."],
      "#1": ["No, it is a synthetic test pattern."],
      "#5": ["Un motif — 日本語 テスト 🎉.", "Rouge, vert et bleu.", "Beaucoup."],
    };
    const texts = batches.flatMap((b) =>
      checkBatch(b, (r) => {
        const id = b.ids[r]!;
        return id.includes("00001-of") ? [b.answers[r]!] : answers[id.slice(id.indexOf("#"))];
      })
    );
    // The <image> marker of row 5 became the placeholder in place (no extra newline).
    assert.ok(texts[2].includes(`<|vision_end|>\nQu'est-ce que c'est ?<|im_end|>`));
    assert.equal(texts[2].split("<|vision_start|>").length, 2);
    // Skips: three in the dataset, two images in the loader.
    assert.deepEqual({ ...dataset.skips.counts }, {
      "no image": 1,
      "refusal answer": 1,
      "no text": 1,
    });
    assert.deepEqual({ ...loader.skips.counts }, {
      "image corrupt": 1,
      "image unsupported-format": 1,
    });
    assert.match(loader.skips.examples["image corrupt"][0], /#2: corrupt JPEG image/);
    assert.match(loader.skips.examples["image unsupported-format"][0], /#6: .*webp/);
    const report = loader.report();
    assert.match(report, /dataset finevision\(alpha\) skipped 3/);
    assert.match(report, /loader skipped 2/);
    await dataset.close();
  } finally {
    pool.close();
  }
});

Deno.test("pipeline: LLaVA batches; a missing file and a WebP are skipped", async () => {
  const dataset = await LlavaDataset.load({
    file: join(DATA, "llava", "llava.json"),
    imageDir: join(DATA, "images"),
    shuffle: false,
  });
  const { batches, loader } = await allBatches({ dataset, processor, batchSize: 8, epochs: 1 });
  assert.equal(batches.length, 1);
  const b = batches[0];
  assert.deepEqual(b.ids, ["llava:l1", "llava:l2", "llava:l7"]);
  const texts = checkBatch(b, (r) =>
    [
      ["A striped test pattern.", "No, it was generated."],
      ["Red, green and blue bands."],
      ["Sixteen."],
    ][r]);
  assert.ok(texts[1].includes(`Describe the colours.\n<|vision_start|>`));
  assert.ok(texts[2].includes(`<|vision_end|>\nHow many colours?<|im_end|>`));
  assert.equal(dataset.skips.counts["image file missing"], 1);
  assert.deepEqual({ ...loader.skips.counts }, { "image unsupported-format": 1 });
});

function sameBatch(a: Batch, b: Batch, what: string) {
  assert.deepEqual(a.ids, b.ids, what);
  assert.deepEqual(a.inputIds, b.inputIds, what);
  assert.deepEqual(a.labels, b.labels, what);
  assert.deepEqual(a.attentionMask, b.attentionMask, what);
  assert.deepEqual(a.pixels, b.pixels, what);
}

Deno.test("pipeline: resuming a loader reproduces the next batches exactly, across passes", async () => {
  const makes: [string, () => Promise<Dataset>][] = [
    ["shapes", () => Promise.resolve(new ShapesDataset({ seed: 2, imageSize: 24, length: 7 }))],
    [
      "finevision",
      () =>
        FineVisionDataset.open({
          location: { dir: join(DATA, "finevision") },
          subsets: ["alpha", "beta"],
          weights: [2, 1],
          seed: 9,
        }),
    ],
  ];
  const pool = new ImagePool({ workers: 1 });
  try {
    for (const [name, make] of makes) {
      const opts = (dataset: Dataset, prefetch: number): LoaderOptions => ({
        dataset,
        processor,
        batchSize: 3,
        epochs: 3,
        pool,
        prefetch,
      });
      const full = await allBatches(opts(await make(), 5));
      assert.ok(full.batches.length >= 5, `${name}: ${full.batches.length} batches`);
      // Prefetch depth does not change the batches.
      const shallow = await allBatches(opts(await make(), 1));
      full.batches.forEach((b, i) => sameBatch(b, shallow.batches[i], `${name} prefetch ${i}`));
      for (const k of [1, 3]) {
        const first = new DataLoader(opts(await make(), 4));
        for (let i = 0; i < k; i++) await first.next();
        const state = JSON.parse(JSON.stringify(first.state()));
        const resumed = new DataLoader(opts(await make(), 4));
        await resumed.restore(state);
        const rest: Batch[] = [];
        for await (const b of resumed) rest.push(b);
        assert.equal(rest.length, full.batches.length - k, `${name} after ${k}`);
        rest.forEach((b, i) => sameBatch(b, full.batches[k + i], `${name} resume ${k}+${i}`));
        assert.deepEqual(resumed.skips.counts, full.loader.skips.counts);
      }
    }
  } finally {
    pool.close();
  }
});

Deno.test("pipeline: max_length drops samples whose image run would be cut", async () => {
  const dataset = new ShapesDataset({ seed: 4, imageSize: 16, length: 6 });
  const { batches, loader } = await allBatches({
    dataset,
    processor,
    batchSize: 4,
    epochs: 1,
    maxLength: 12,
  });
  assert.equal(batches.length, 0);
  assert.equal(loader.skips.counts["too long"], 6);
  assert.match(loader.skips.examples["too long"][0], /max_length 12 cuts the image placeholder/);
  // A limit past the image but inside the answer truncates instead.
  const full = processor.encodeSample((await new ShapesDataset({ seed: 4, length: 1 }).next())!);
  const cut = await allBatches({
    dataset: new ShapesDataset({ seed: 4, imageSize: 16, length: 1 }),
    processor,
    batchSize: 1,
    epochs: 1,
    maxLength: full.inputIds.length - 2,
  });
  assert.equal(cut.batches[0].seqLen, full.inputIds.length - 2);
});
