// Collation: right padding, masks, labels on padding, pixel stacking, and the max_length rule
// that never cuts an image placeholder run.

import assert from "node:assert/strict";
import {
  collate,
  type CollateOptions,
  type EncodedSample,
  fitToLength,
} from "../src/data/collator.ts";

const PAD = 0, VS = 1, VE = 2, IMG = 3, N = -100;
const opts: CollateOptions = {
  ids: { pad: PAD, visionStart: VS, visionEnd: VE, imagePad: IMG },
  imageSize: 2,
  tokensPerImage: 2,
};
const px = (v: number) => new Float32Array(12).fill(v);

function sample(ids: number[], labels: number[] | undefined, images: number[], id: string) {
  return {
    inputIds: Int32Array.from(ids),
    labels: labels ? Int32Array.from(labels) : undefined,
    pixelValues: images.map(px),
    id,
    question: `q-${id}`,
    answer: `a-${id}`,
  } satisfies EncodedSample;
}

Deno.test("collate: right padding, attention mask, −100 on padding, images in order", () => {
  const a = sample([10, VS, IMG, IMG, VE, 11, 12], [N, N, N, N, N, 11, 12], [0.5], "a");
  const b = sample([10, VS, IMG, IMG, VE, 13], [N, N, N, N, N, 13], [-0.25], "b");
  const c = sample(
    [VS, IMG, IMG, VE, VS, IMG, IMG, VE, 14, 15, 16, 17],
    [
      N,
      N,
      N,
      N,
      N,
      N,
      N,
      N,
      N,
      N,
      16,
      17,
    ],
    [1, 2],
    "c",
  );
  const batch = collate([a, b, c], opts);
  assert.equal(batch.batch, 3);
  assert.equal(batch.seqLen, 12);
  const row = (arr: Int32Array, r: number) => Array.from(arr.slice(r * 12, r * 12 + 12));
  assert.deepEqual(row(batch.inputIds, 1), [10, VS, IMG, IMG, VE, 13, 0, 0, 0, 0, 0, 0]);
  assert.deepEqual(row(batch.attentionMask, 1), [1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0]);
  assert.deepEqual(row(batch.labels!, 1), [N, N, N, N, N, 13, N, N, N, N, N, N]);
  assert.deepEqual(row(batch.labels!, 2), Array.from(c.labels!));
  assert.deepEqual(batch.lengths, [7, 6, 12]);
  assert.deepEqual(batch.pixelShape, [4, 3, 2, 2]);
  assert.deepEqual(batch.imagesPerSample, [1, 1, 2]);
  assert.deepEqual(
    [0, 1, 2, 3].map((i) => batch.pixels[i * 12]),
    [0.5, -0.25, 1, 2],
  );
  assert.deepEqual(batch.ids, ["a", "b", "c"]);
  assert.deepEqual(batch.questions, ["q-a", "q-b", "q-c"]);
  assert.deepEqual(batch.dropped, []);
  const noLabels = collate([sample([10, VS, IMG, IMG, VE], undefined, [0], "p")], opts);
  assert.equal(noLabels.labels, undefined);
  assert.throws(
    () => collate([a, sample([VS, IMG, IMG, VE], undefined, [0], "x")], opts),
    /some samples have labels/,
  );
});

Deno.test("collate: max_length cuts after the image run, drops a cut inside it", () => {
  const s = sample([10, 11, VS, IMG, IMG, VE, 12, 13, 14, 15], [N, N, N, N, N, N, 12, 13, 14, 15], [
    0,
  ], "s");
  // Cut after the run, inside the answer: kept, truncated.
  const cut = fitToLength(s, { ...opts, maxLength: 8 });
  assert.ok(cut.ok);
  assert.deepEqual(Array.from(cut.sample.inputIds), [10, 11, VS, IMG, IMG, VE, 12, 13]);
  assert.deepEqual(Array.from(cut.sample.labels!), [N, N, N, N, N, N, 12, 13]);
  // Cut inside the run (or before it): dropped with the reason.
  for (const max of [3, 4, 5, 1]) {
    const r = fitToLength(s, { ...opts, maxLength: max });
    assert.ok(!r.ok);
    assert.match(r.reason, new RegExp(`max_length ${max} cuts the image placeholder`));
  }
  // Cut right after the run leaves no answer token: dropped.
  const none = fitToLength(s, { ...opts, maxLength: 6 });
  assert.ok(!none.ok && /leaves no answer token/.test(none.reason));
  // The batch keeps the others and lists the drops.
  const ok = sample([VS, IMG, IMG, VE, 20], [N, N, N, N, 20], [0], "ok");
  const batch = collate([s, ok], { ...opts, maxLength: 5 });
  assert.equal(batch.batch, 1);
  assert.deepEqual(batch.ids, ["ok"]);
  assert.equal(batch.dropped.length, 1);
  assert.equal(batch.dropped[0].index, 0);
  assert.equal(batch.dropped[0].id, "s");
  assert.match(batch.dropped[0].reason, /cuts the image placeholder/);
});

Deno.test("collate: placeholder count and pixel size are checked", () => {
  const wrong = sample([VS, IMG, VE, 9], [N, N, N, 9], [0], "w");
  const r = fitToLength(wrong, opts);
  assert.ok(!r.ok && /1 image tokens for 1 image\(s\) × 2 tokens/.test(r.reason));
  const badPx = {
    ...sample([VS, IMG, IMG, VE, 9], [N, N, N, N, 9], [], "p"),
    pixelValues: [new Float32Array(5)],
  };
  const p = fitToLength(badPx, opts);
  assert.ok(!p.ok && /pixel array of 5 values, expected 3×2×2/.test(p.reason));
  const mismatch = { ...sample([1, 2], [N], [], "m") };
  assert.ok(!fitToLength(mismatch, { ...opts, tokensPerImage: undefined }).ok);
  const empty = collate([], opts);
  assert.equal(empty.batch, 0);
  assert.deepEqual(empty.pixelShape, [0, 3, 2, 2]);
});
