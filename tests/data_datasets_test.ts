// Datasets: generated shapes, LLaVA JSON/JSONL, FineVision parquet (local folders and a hub
// served from 127.0.0.1), train/eval windows, and exact resumption of every kind.

import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  FineVisionDataset,
  type FineVisionOptions,
  interleaveChoice,
  isRefusal,
  REFUSAL_PHRASES,
} from "../src/data/datasets/finevision.ts";
import { LlavaDataset, pairConversation } from "../src/data/datasets/llava.ts";
import { cachedHubClient } from "../src/data/datasets/hub_cache.ts";
import { httpHubClient } from "../src/data/datasets/remote_files.ts";
import {
  COUNT_WORDS,
  POSITIONS,
  QUESTION_KINDS,
  SHAPE_COLORS,
  SHAPE_KINDS,
  SHAPES_ANSWERS,
  ShapesDataset,
  type ShapesSample,
} from "../src/data/datasets/shapes.ts";
import { splitTrainEval, WindowDataset } from "../src/data/datasets/split.ts";
import type { Dataset, Sample } from "../src/data/datasets/types.ts";
import { decodeImage } from "../src/data/image.ts";

const DATA = join(dirname(fileURLToPath(import.meta.url)), "fixtures", "data");
const FV = join(DATA, "finevision");

async function drain(ds: Dataset, max = 10_000): Promise<Sample[]> {
  const out: Sample[] = [];
  for (let s = await ds.next(); s && out.length < max; s = await ds.next()) out.push(s);
  return out;
}

/** Reads k samples, then checks a fresh instance restored from the state continues the same. */
async function checkResume(make: () => Promise<Dataset>, k: number, total: number) {
  const full = await make();
  const all = (await drain(full, total)).map((s) => s.id);
  await full.close?.();
  const first = await make();
  for (let i = 0; i < k; i++) await first.next();
  const state = JSON.parse(JSON.stringify(first.state()));
  await first.close?.();
  const resumed = await make();
  resumed.restore(state);
  const rest = (await drain(resumed, total - k)).map((s) => s.id);
  await resumed.close?.();
  assert.deepEqual(rest, all.slice(k), `resume after ${k}`);
}

// ---------------------------------------------------------------------------------- shapes

function nonWhite(img: ShapesSample["image"], x: number, y: number): boolean {
  const p = (y * img.width + x) * 3;
  return img.data[p] + img.data[p + 1] + img.data[p + 2] < 600;
}

function components(img: ShapesSample["image"]): number {
  const seen = new Uint8Array(img.width * img.height);
  let n = 0;
  for (let i = 0; i < seen.length; i++) {
    if (seen[i] || !nonWhite(img, i % img.width, Math.floor(i / img.width))) continue;
    n++;
    const stack = [i];
    seen[i] = 1;
    while (stack.length) {
      const j = stack.pop()!;
      const x = j % img.width, y = Math.floor(j / img.width);
      for (const [dx, dy] of [[1, 0], [-1, 0], [0, 1], [0, -1]]) {
        const u = x + dx, v = y + dy;
        if (u < 0 || v < 0 || u >= img.width || v >= img.height) continue;
        const k = v * img.width + u;
        if (!seen[k] && nonWhite(img, u, v)) {
          seen[k] = 1;
          stack.push(k);
        }
      }
    }
  }
  return n;
}

Deno.test("shapes: the drawn image agrees with the answer, for every kind and size", async () => {
  for (const size of [32, 64]) {
    const ds = new ShapesDataset({ seed: 11, imageSize: size, length: 200 });
    const samples = (await drain(ds)) as ShapesSample[];
    assert.equal(samples.length, 200);
    for (const s of samples) {
      assert.equal(s.image.width, size);
      assert.ok(SHAPES_ANSWERS.includes(s.answer), s.answer);
      assert.ok(!s.answer.includes(" "), "one-word answers");
      const sh = s.shapes[0];
      if (s.kind === "color") {
        const p = (Math.round(sh.cy - 0.5) * size + Math.round(sh.cx - 0.5)) * 3;
        const [r, g, b] = SHAPE_COLORS[s.answer];
        assert.deepEqual(Array.from(s.image.data.slice(p, p + 3)), [r, g, b], s.id);
      } else if (s.kind === "shape") {
        assert.equal(s.answer, sh.kind);
        // Near the centre, and the drawn area (anti-aliased coverage) is the kind's:
        // square 4r², circle πr², triangle 2r².
        assert.ok(Math.abs(sh.cx / size - 0.5) <= 0.1 && Math.abs(sh.cy / size - 0.5) <= 0.1);
        const c = SHAPE_COLORS[sh.color];
        const full = 765 - (c[0] + c[1] + c[2]);
        let area = 0;
        for (let p = 0; p < s.image.data.length; p += 3) {
          area += (765 - s.image.data[p] - s.image.data[p + 1] - s.image.data[p + 2]) / full;
        }
        const want = { square: 4, circle: Math.PI, triangle: 2 }[sh.kind] * sh.r * sh.r;
        assert.ok(Math.abs(area / want - 1) < 0.12, `${s.id}: area ${area} vs ${want}`);
      } else if (s.kind === "count") {
        assert.equal(COUNT_WORDS[components(s.image) - 1], s.answer, s.id);
      } else {
        // Centre of mass of the coloured pixels lies in the answered zone.
        let sx = 0, sy = 0, n = 0;
        for (let y = 0; y < size; y++) {
          for (let x = 0; x < size; x++) {
            if (nonWhite(s.image, x, y)) {
              sx += x + 0.5;
              sy += y + 0.5;
              n++;
            }
          }
        }
        const cx = sx / n / size, cy = sy / n / size;
        const zone = cx < 0.35 ? "left" : cx > 0.65 ? "right" : cy < 0.35 ? "top" : "bottom";
        assert.equal(zone, s.answer, `${s.id} at ${cx.toFixed(2)},${cy.toFixed(2)}`);
      }
    }
  }
});

Deno.test("shapes: small balanced vocabulary, deterministic by seed", async () => {
  const a =
    (await drain(new ShapesDataset({ seed: 3, imageSize: 32, length: 800 }))) as ShapesSample[];
  const b =
    (await drain(new ShapesDataset({ seed: 3, imageSize: 32, length: 800 }))) as ShapesSample[];
  const c =
    (await drain(new ShapesDataset({ seed: 4, imageSize: 32, length: 50 }))) as ShapesSample[];
  assert.deepEqual(a.map((s) => s.image.data), b.map((s) => s.image.data));
  assert.notDeepEqual(a.slice(0, 50).map((s) => s.answer), c.map((s) => s.answer));
  const byKind = new Map<string, Map<string, number>>();
  for (const s of a) {
    const m = byKind.get(s.kind) ?? new Map();
    m.set(s.answer, (m.get(s.answer) ?? 0) + 1);
    byKind.set(s.kind, m);
  }
  assert.deepEqual([...byKind.keys()].sort(), [...QUESTION_KINDS].sort());
  const expect: Record<string, readonly string[]> = {
    color: Object.keys(SHAPE_COLORS),
    shape: SHAPE_KINDS,
    count: COUNT_WORDS,
    where: POSITIONS,
  };
  for (const [kind, m] of byKind) {
    assert.deepEqual([...m.keys()].sort(), [...expect[kind]].sort(), kind);
    const counts = [...m.values()];
    assert.ok(Math.min(...counts) > 0.4 * Math.max(...counts), `${kind} balanced: ${counts}`);
  }
  assert.ok(SHAPES_ANSWERS.length <= 16);
  const only = await drain(new ShapesDataset({ seed: 1, kinds: ["count"], length: 20 }));
  assert.ok((only as ShapesSample[]).every((s) => s.kind === "count"));
  assert.throws(() => new ShapesDataset({ imageSize: 8 }), /imageSize/);
});

Deno.test("shapes: resume continues the exact sequence", async () => {
  for (const k of [0, 1, 17]) {
    await checkResume(() => Promise.resolve(new ShapesDataset({ seed: 5, length: 40 })), k, 40);
  }
  const ds = new ShapesDataset({ seed: 5 });
  assert.throws(() => ds.restore({ kind: "shapes", seed: 6, epoch: 0, pos: 0 }), /seed 6/);
});

// ----------------------------------------------------------------------------------- llava

Deno.test("llava: JSON and JSONL parse the same, bad records skipped and counted", async () => {
  for (const file of ["llava.json", "llava.jsonl"]) {
    const ds = await LlavaDataset.load({
      file: join(DATA, "llava", file),
      imageDir: join(DATA, "images"),
      shuffle: false,
    });
    assert.equal(ds.length, 5);
    const counts: Record<string, number> = ds.skips.counts;
    assert.deepEqual({ ...counts }, { "no image": 1, "bad conversation": 1 });
    const got = await drain(ds);
    assert.deepEqual(got.map((s) => s.id), ["llava:l1", "llava:l2", "llava:l6", "llava:l7"]);
    assert.equal(counts["image file missing"], 1);
    assert.match(ds.skips.examples["image file missing"][0], /does_not_exist\.png$/);
    const l1 = got[0];
    assert.equal(l1.question, "<image>\nWhat is in the picture?");
    assert.equal(l1.answer, "A striped test pattern.");
    assert.deepEqual(l1.turns?.map((t) => t.assistant), [
      "A striped test pattern.",
      "No, it was generated.",
    ]);
    assert.equal(got[3].question, "How many colours?", "system message ignored");
    const img = await decodeImage(got[0].image as Uint8Array);
    assert.equal(img.width, 24);
  }
  assert.deepEqual(
    pairConversation([{ from: "gpt", value: "x" }, { from: "human", value: "y" }]),
    "conversation roles are not human/gpt alternating (got gpt, human)",
  );
});

Deno.test("llava: seeded order, turn selection, resume", async () => {
  const make = (seed: number, turns: "all" | "first" | "random" = "all") =>
    LlavaDataset.load({
      file: join(DATA, "llava", "llava.json"),
      imageDir: join(DATA, "images"),
      seed,
      turns,
    });
  const a = (await drain(await make(1))).map((s) => s.id);
  const b = (await drain(await make(1))).map((s) => s.id);
  assert.deepEqual(a, b);
  assert.deepEqual([...a].sort(), ["llava:l1", "llava:l2", "llava:l6", "llava:l7"]);
  const first = (await drain(await make(1, "first"))).find((s) => s.id === "llava:l1")!;
  assert.equal(first.turns, undefined);
  assert.equal(first.answer, "A striped test pattern.");
  // Random turn: over several passes both turns of l1 are chosen.
  const ds = await make(2, "random");
  const seen = new Set<string>();
  for (let e = 0; e < 12; e++) {
    ds.rewind(e);
    for (const s of await drain(ds)) if (s.id === "llava:l1") seen.add(s.answer);
  }
  assert.equal(seen.size, 2);
  for (const k of [0, 2, 4]) await checkResume(() => make(9), k, 4);
});

// ------------------------------------------------------------------------------ finevision

Deno.test("finevision: refusal phrases", () => {
  assert.equal(REFUSAL_PHRASES.length, 16);
  assert.ok(isRefusal("Sorry — AS AN AI I can't see that."));
  assert.ok(isRefusal("i'm unable to help"));
  assert.ok(!isRefusal("A cat sits on a mat."));
});

const alphaIds = [
  "alpha/train-00000-of-00002.parquet#0",
  "alpha/train-00000-of-00002.parquet#1",
  "alpha/train-00000-of-00002.parquet#2",
  "alpha/train-00000-of-00002.parquet#5",
  "alpha/train-00000-of-00002.parquet#6",
  "alpha/train-00001-of-00002.parquet#0",
  "alpha/train-00001-of-00002.parquet#1",
].map((s) => `finevision:${s}`);

Deno.test("finevision: one subset streams every usable row once, skipping bad rows", async () => {
  const ds = await FineVisionDataset.open({
    location: { dir: FV },
    subsets: ["alpha"],
    turns: "first",
  });
  const got = await drain(ds);
  assert.deepEqual(got.map((s) => s.id), alphaIds);
  assert.deepEqual(ds.skips.counts, { "no image": 1, "refusal answer": 1, "no text": 1 });
  assert.equal(got[0].question, "What kind of picture is this?");
  assert.equal(got[0].answer, "A colourful striped pattern.");
  assert.equal(got[0].source, "alpha");
  assert.equal(got[3].answer, "Un motif — 日本語 テスト 🎉.");
  const png = await decodeImage(got[0].image as Uint8Array);
  assert.deepEqual([png.width, png.height], [24, 16]);
  // Multi-turn rows as conversations.
  const all = await FineVisionDataset.open({
    location: { dir: FV },
    subsets: ["alpha"],
    turns: "all",
  });
  const conv = (await drain(all)).find((s) => s.id === alphaIds[3])!;
  assert.deepEqual(conv.turns?.map((t) => t.user), [
    "<image>\nQu'est-ce que c'est ?",
    "Et les couleurs ?",
    "Combien de bandes ?",
  ]);
  await ds.close();
  await all.close();
});

Deno.test("finevision: data/<subset> layout, zstd, row groups of two", async () => {
  const ds = await FineVisionDataset.open({ location: { dir: FV }, subsets: ["beta"] });
  const got = await drain(ds);
  assert.deepEqual(got.map((s) => s.answer), [0, 1, 2, 3, 4].map((i) => `Beta answer ${i}.`));
  assert.match(got[0].id, /^finevision:data\/beta\/train-00000-of-00001\.parquet#0$/);
  await ds.close();
  await assert.rejects(
    FineVisionDataset.open({ location: { dir: FV }, subsets: ["gamma"] }),
    /no parquet files for "gamma"/,
  );
  await assert.rejects(
    FineVisionDataset.open({ location: { dir: FV }, subsets: ["alpha", "beta"], weights: [1] }),
    /1 weights for 2 subsets/,
  );
});

/** Rows of the fixture subsets in file order, and which of them the dataset skips. */
const ROWS: Record<string, { id: string; skipped: boolean }[]> = {
  alpha: [
    ...[0, 1, 2, 3, 4, 5, 6, 7].map((r) => ({
      id: `finevision:alpha/train-00000-of-00002.parquet#${r}`,
      skipped: [3, 4, 7].includes(r),
    })),
    ...[0, 1].map((r) => ({
      id: `finevision:alpha/train-00001-of-00002.parquet#${r}`,
      skipped: false,
    })),
  ],
  beta: [0, 1, 2, 3, 4].map((r) => ({
    id: `finevision:data/beta/train-00000-of-00001.parquet#${r}`,
    skipped: false,
  })),
};

/**
 * Hugging Face's all_exhausted interleave, restated: draw a source, take its next row, restart
 * a source that runs out and mark it exhausted; stop before drawing once all are exhausted.
 */
function interleaveReference(names: string[], weights: number[], seed: number): string[] {
  const total = weights.reduce((a, b) => a + b, 0);
  let acc = 0;
  const cumulative = weights.map((w) => (acc += w / total));
  const index = names.map(() => 0);
  const exhausted = names.map(() => false);
  const out: string[] = [];
  for (let step = 0; !exhausted.every(Boolean); step++) {
    const s = interleaveChoice(seed, step, cumulative);
    const rows = ROWS[names[s]];
    const row = rows[index[s]];
    if (!row.skipped) out.push(row.id);
    if (++index[s] >= rows.length) {
      index[s] = 0;
      exhausted[s] = true;
    }
  }
  return out;
}

Deno.test("finevision: weighted all_exhausted interleave, seeded", async () => {
  for (const [weights, seed] of [[[1, 1], 42], [[1, 3], 7], [[5, 1], 1]] as const) {
    const opts: FineVisionOptions = {
      location: { dir: FV },
      subsets: ["alpha", "beta"],
      weights: [...weights],
      seed,
    };
    const ds = await FineVisionDataset.open(opts);
    const got = (await drain(ds)).map((s) => s.id);
    assert.deepEqual(got, interleaveReference(["alpha", "beta"], [...weights], seed));
    // Both subsets fully seen at least once.
    for (const rows of Object.values(ROWS)) {
      for (const r of rows) if (!r.skipped) assert.ok(got.includes(r.id), r.id);
    }
    // A second pass repeats the same sequence.
    ds.rewind(1);
    assert.deepEqual((await drain(ds)).map((s) => s.id), got);
    await ds.close();
  }
  // The draw follows the weights.
  const counts = [0, 0, 0];
  for (let step = 0; step < 30_000; step++) counts[interleaveChoice(3, step, [0.2, 0.5, 1])]++;
  [0.2, 0.3, 0.5].forEach((p, i) => assert.ok(Math.abs(counts[i] / 30_000 - p) < 0.015));
});

Deno.test("finevision: seeded turn choice varies by pass; resume is exact", async () => {
  const open = () =>
    FineVisionDataset.open({ location: { dir: FV }, subsets: ["alpha", "beta"], seed: 3 });
  const ds = await open();
  const seen = new Set<string>();
  for (let e = 0; e < 10; e++) {
    ds.rewind(e);
    for (const s of await drain(ds)) if (s.id === alphaIds[3]) seen.add(s.question);
  }
  assert.ok(seen.size >= 2, `turns of a 3-turn row over 10 passes: ${[...seen]}`);
  await ds.close();
  const n = (await drain(await open())).length;
  for (const k of [0, 1, 4, n - 1]) await checkResume(open, k, n);
  const other = await FineVisionDataset.open({ location: { dir: FV }, subsets: ["beta"] });
  const mixState = (await open()).state();
  assert.throws(() => other.restore(mixState), /another mix/);
  await other.close();
});

Deno.test("finevision: streams from a hub over HTTP range requests", async () => {
  const requests: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const url = new URL(req.url);
    const tree = url.pathname.match(
      /^\/api\/datasets\/HuggingFaceM4\/FineVision\/tree\/main\/(.*)$/,
    );
    if (tree) {
      const dir = decodeURIComponent(tree[1]);
      try {
        const items = [];
        for await (const e of Deno.readDir(join(FV, dir))) {
          items.push({ type: e.isFile ? "file" : "directory", path: `${dir}/${e.name}` });
        }
        return Response.json(items);
      } catch {
        return new Response("not found", { status: 404 });
      }
    }
    const file = url.pathname.match(/^\/datasets\/HuggingFaceM4\/FineVision\/resolve\/main\/(.*)$/);
    if (!file) return new Response("?", { status: 400 });
    const bytes = await Deno.readFile(join(FV, decodeURIComponent(file[1])));
    if (req.method === "HEAD") {
      return new Response(null, { headers: { "content-length": String(bytes.length) } });
    }
    const range = req.headers.get("range")?.match(/^bytes=(\d+)-(\d+)$/);
    requests.push(range ? "range" : "full");
    if (!range) return new Response(bytes);
    const body = bytes.slice(Number(range[1]), Number(range[2]) + 1);
    return new Response(body, { status: 206 });
  });
  try {
    const hub = httpHubClient({ endpoint: `http://127.0.0.1:${server.addr.port}` });
    const ds = await FineVisionDataset.open({
      location: { hub, repo: "HuggingFaceM4/FineVision" },
      subsets: ["alpha", "beta"],
      seed: 5,
    });
    const local = await FineVisionDataset.open({
      location: { dir: FV },
      subsets: ["alpha", "beta"],
      seed: 5,
    });
    const a = await drain(ds), b = await drain(local);
    assert.deepEqual(
      a.map((s) => [s.id, s.question, s.answer]),
      b.map((s) => [s.id, s.question, s.answer]),
    );
    assert.deepEqual(a.map((s) => s.image), b.map((s) => s.image));
    assert.ok(requests.length > 0 && requests.every((r) => r === "range"), requests.join());
    await assert.rejects(
      FineVisionDataset.open({
        location: { hub, repo: "HuggingFaceM4/FineVision" },
        subsets: ["x"],
      }),
      /no parquet files for "x" in hub repo/,
    );
    await ds.close();
    await local.close();
  } finally {
    await server.shutdown();
  }
});

Deno.test("finevision: reads shards from the local hub cache (offline)", async () => {
  const cache = await Deno.makeTempDir();
  try {
    const sha = "0123456789abcdef0123456789abcdef01234567";
    const storage = join(cache, "datasets--HuggingFaceM4--FineVision");
    await Deno.mkdir(join(storage, "refs"), { recursive: true });
    await Deno.writeTextFile(join(storage, "refs", "main"), sha);
    for (const f of ["alpha/train-00000-of-00002.parquet", "alpha/train-00001-of-00002.parquet"]) {
      await Deno.mkdir(join(storage, "snapshots", sha, "alpha"), { recursive: true });
      await Deno.copyFile(join(FV, f), join(storage, "snapshots", sha, f));
    }
    const hub = cachedHubClient({ cacheDir: cache, offline: true });
    const ds = await FineVisionDataset.open({
      location: { hub, repo: "HuggingFaceM4/FineVision" },
      subsets: ["alpha"],
      turns: "first",
    });
    assert.deepEqual((await drain(ds)).map((s) => s.id), alphaIds);
    await ds.close();
    await assert.rejects(
      FineVisionDataset.open({
        location: { hub, repo: "HuggingFaceM4/FineVision" },
        subsets: ["beta"],
      }),
      /no parquet files for "beta"/,
    );
  } finally {
    await Deno.remove(cache, { recursive: true });
  }
});

// ----------------------------------------------------------------------------------- split

Deno.test("split: eval is the first max_eval_samples, train the rest up to max_samples", async () => {
  const make = () => new ShapesDataset({ seed: 8, imageSize: 16 });
  const { train, eval: ev } = await splitTrainEval(make, { maxSamples: 30, maxEvalSamples: 6 });
  const evalIds = (await drain(ev!)).map((s) => s.id);
  assert.deepEqual(evalIds, [0, 1, 2, 3, 4, 5].map((i) => `shapes:8:${i}`));
  for (let epoch = 0; epoch < 3; epoch++) {
    train.rewind(epoch);
    const ids = (await drain(train)).map((s) => s.id);
    assert.equal(ids.length, 24);
    assert.equal(ids[0], "shapes:8:6");
    assert.ok(ids.every((id) => !evalIds.includes(id)));
  }
  // Window state resumes too, including before the eval samples were skipped.
  for (const k of [0, 1, 10]) {
    await checkResume(() => Promise.resolve(new WindowDataset(make(), 6, 30)), k, 24);
  }
  await assert.rejects(
    splitTrainEval(make, { maxSamples: 5, maxEvalSamples: 5 }),
    /must be >= 0 and </,
  );
  const noEval = await splitTrainEval(make, { maxSamples: 3 });
  assert.equal(noEval.eval, undefined);
  assert.equal((await drain(noEval.train)).length, 3);
});

Deno.test("--data_path: FineVision folder split into eval + train; resume needs the same split", async () => {
  const { openDatasets } = await import("../src/data/datasets/open.ts");
  const spec = {
    dataPath: FV,
    subSets: ["alpha"],
    subSetsWeights: null,
    seed: 3,
    maxSamples: 6,
    maxEvalSamples: 2,
    imageSize: 16,
  };
  const ds = await openDatasets(spec);
  assert.ok(ds.eval);
  assert.deepEqual((await drain(ds.eval)).map((s) => s.id), alphaIds.slice(0, 2));
  assert.deepEqual((await drain(ds.train)).map((s) => s.id), alphaIds.slice(2, 6));
  const other = await openDatasets({ ...spec, maxSamples: 7 });
  assert.throws(
    () => other.train.restore(ds.train.state()),
    /window \[2,6\], not \[2, 7\).*same --max_samples/,
  );
  for (const d of [ds.train, ds.eval, other.train, other.eval!]) await d.close?.();
});
