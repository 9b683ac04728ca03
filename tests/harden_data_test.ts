// Hardening of the data layer (issue 15): LLaVA image paths kept inside their folder and read
// through the bounded reader (class 1), image size limits checked from the header before
// decoding (2), corrupt parquet row groups skipped and counted with resume (3), and tokenizer /
// LLaVA JSON errors naming file, field and position (6).

import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parquetMetadataAsync } from "../src/deps.ts";
import { LlavaDataset } from "../src/data/datasets/llava.ts";
import { FineVisionDataset } from "../src/data/datasets/finevision.ts";
import type { Dataset, Sample } from "../src/data/datasets/types.ts";
import {
  decodeImage,
  headerSize,
  ImageDecodeError,
  MAX_IMAGE_PIXELS,
  setMaxImagePixels,
} from "../src/data/image.ts";
import { TextTokenizer } from "../src/data/tokenizer.ts";
import { crc32 } from "../src/io/zip.ts";

const DATA = join(dirname(fileURLToPath(import.meta.url)), "fixtures", "data");
const IMAGES = join(DATA, "images");
const tmp = () => Deno.makeTempDir({ prefix: "siqvl_harden_data_" });

async function drain(ds: Dataset): Promise<Sample[]> {
  const out: Sample[] = [];
  for (let s = await ds.next(); s; s = await ds.next()) out.push(s);
  return out;
}

const conv = [{ from: "human", value: "<image>\nQ?" }, { from: "gpt", value: "A." }];

// ------------------------------------------------------------------------------ class 1

Deno.test("llava: absolute, .. and linked-out image paths are refused and counted", async () => {
  const dir = await tmp();
  const root = join(dir, "ds");
  await Deno.mkdir(root);
  await Deno.copyFile(join(IMAGES, "rgb.png"), join(root, "ok.png"));
  await Deno.copyFile(join(IMAGES, "rgb.png"), join(dir, "outside.png"));
  await Deno.symlink(join(dir, "outside.png"), join(root, "link.png"));
  const fifo = join(root, "pipe.png");
  assert.ok((await new Deno.Command("mkfifo", { args: [fifo] }).output()).success);
  const records = [
    { id: "ok", image: "ok.png", conversations: conv },
    { id: "abs", image: join(dir, "outside.png"), conversations: conv },
    { id: "up", image: "../outside.png", conversations: conv },
    { id: "link", image: "link.png", conversations: conv },
    { id: "fifo", image: "pipe.png", conversations: conv },
  ];
  const file = join(root, "data.json");
  await Deno.writeTextFile(file, JSON.stringify(records));
  const ds = await LlavaDataset.load({ file, shuffle: false });
  const got = await drain(ds);
  assert.deepEqual(got.map((s) => s.id), ["llava:ok"]);
  assert.equal(ds.skips.counts["outside the folder"], 3);
  assert.equal(ds.skips.counts["image file unreadable"], 1, "a FIFO is refused, not read");
  assert.match(ds.skips.examples["image file unreadable"][0], /not a regular file/);
  // Allowed by option: the three outside images are read.
  const open = await LlavaDataset.load({ file, shuffle: false, allowOutside: true });
  assert.deepEqual((await drain(open)).map((s) => s.id), [
    "llava:ok",
    "llava:abs",
    "llava:up",
    "llava:link",
  ]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("llava: JSON errors name file, line and column", async () => {
  const dir = await tmp();
  const json = join(dir, "bad.json");
  await Deno.writeTextFile(
    json,
    '[\n  {"id": "a", "image": "x.png"},\n  {"id": "b" "image": 1}\n]',
  );
  await assert.rejects(LlavaDataset.load({ file: json }), /bad\.json:3:14: invalid JSON/);
  const jsonl = join(dir, "bad.jsonl");
  await Deno.writeTextFile(jsonl, '{"id": "a"}\n{"id": tru}\n');
  await assert.rejects(LlavaDataset.load({ file: jsonl }), /bad\.jsonl:2:8: bad JSON line/);
  await Deno.remove(dir, { recursive: true });
});

// ------------------------------------------------------------------------------ class 2

function pngHeader(width: number, height: number): Uint8Array {
  const b = new Uint8Array(8 + 25);
  b.set([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  const v = new DataView(b.buffer);
  v.setUint32(8, 13);
  b.set([0x49, 0x48, 0x44, 0x52], 12); // IHDR
  v.setUint32(16, width);
  v.setUint32(20, height);
  b.set([8, 6, 0, 0, 0], 24); // 8-bit RGBA
  v.setUint32(29, crc32(b.subarray(12, 29)));
  return b;
}

Deno.test("image: size limits are checked from the header, before decoding", async () => {
  // PNG: a 33-byte file claiming 100000×100000 pixels is "too large", not "corrupt".
  const png = pngHeader(100_000, 100_000);
  assert.deepEqual(headerSize(png), { width: 100_000, height: 100_000 });
  await assert.rejects(decodeImage(png), (e: unknown) => {
    assert.ok(e instanceof ImageDecodeError);
    assert.equal(e.reason, "too-large");
    assert.match(
      e.message,
      new RegExp(`too large: 100000×100000 > limit ${MAX_IMAGE_PIXELS} .*--max_image_pixels`),
    );
    return true;
  });
  // JPEG: the start-of-frame segment, found past APP/DQT segments.
  const jpg = await Deno.readFile(join(IMAGES, "rgb.jpg"));
  const real = headerSize(jpg)!;
  const decoded = await decodeImage(jpg);
  assert.deepEqual(real, { width: decoded.width, height: decoded.height });
  const progressive = await Deno.readFile(join(IMAGES, "progressive.jpg"));
  const pd = await decodeImage(progressive);
  assert.deepEqual(headerSize(progressive), { width: pd.width, height: pd.height });
  // GIF: logical screen / first frame.
  const gif = await Deno.readFile(join(IMAGES, "still.gif"));
  const gd = await decodeImage(gif);
  assert.deepEqual(headerSize(gif), { width: gd.width, height: gd.height });
  try {
    setMaxImagePixels(real.width * real.height - 1);
    await assert.rejects(
      decodeImage(jpg),
      new RegExp(`JPEG image too large: ${real.width}×${real.height} > limit`),
    );
    setMaxImagePixels(gd.width * gd.height - 1);
    await assert.rejects(decodeImage(gif), /GIF image too large/);
  } finally {
    setMaxImagePixels(undefined);
  }
  // A patched JPEG claiming 60000×60000 is refused without being decoded.
  const big = jpg.slice();
  let p = 2;
  while (!(big[p + 1] >= 0xc0 && big[p + 1] <= 0xc2)) p += 2 + ((big[p + 2] << 8) | big[p + 3]);
  new DataView(big.buffer).setUint16(p + 5, 60000);
  new DataView(big.buffer).setUint16(p + 7, 60000);
  await assert.rejects(decodeImage(big), /too large: 60000×60000/);
});

// ------------------------------------------------------------------------------ class 3

Deno.test("finevision: a corrupt row group is skipped and counted; resume skips it the same", async () => {
  const dir = await tmp();
  const sub = join(dir, "alpha");
  await Deno.mkdir(sub);
  const names = ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"];
  for (const n of names) await Deno.copyFile(join(DATA, "finevision", "alpha", n), join(sub, n));
  // Shard 0 holds one row group of 8 rows: overwrite the middle of each of its column chunks.
  const dst = join(sub, names[0]);
  const bytes = await Deno.readFile(dst);
  const md = await parquetMetadataAsync(bytes.buffer.slice(0) as ArrayBuffer);
  assert.equal(md.row_groups.length, 1);
  for (const col of md.row_groups[0].columns) {
    const m = col.meta_data!;
    const start = Number(m.dictionary_page_offset ?? m.data_page_offset);
    const len = Number(m.total_compressed_size);
    for (let i = start + 8; i < start + len - 2; i++) bytes[i] = (i * 37) & 0xff;
  }
  await Deno.writeFile(dst, bytes);
  const make = () =>
    FineVisionDataset.open({ location: { dir }, subsets: ["alpha"], turns: "first" });
  const ds = await make();
  const got = await drain(ds);
  // Training goes on with shard 1.
  assert.deepEqual(got.map((s) => s.id), [
    "finevision:alpha/train-00001-of-00002.parquet#0",
    "finevision:alpha/train-00001-of-00002.parquet#1",
  ]);
  assert.equal(ds.skips.counts["corrupt row group"], 1, "counted once per group, not per row");
  assert.match(
    ds.skips.examples["corrupt row group"][0],
    /alpha\/train-00000-of-00002\.parquet row group 0 \(rows 0\.\.7\)/,
  );
  await ds.close();
  // Resume after the first sample: the same sample follows and the skip count is carried.
  const first = await make();
  await first.next();
  const state = JSON.parse(JSON.stringify(first.state()));
  await first.close();
  const resumed = await make();
  resumed.restore(state);
  assert.deepEqual((await drain(resumed)).map((s) => s.id), [got[1].id]);
  assert.equal(resumed.skips.counts["corrupt row group"], 1);
  await resumed.close();
  // Resume from the very start skips the group the same way.
  const again = await make();
  again.restore(JSON.parse(JSON.stringify((await make()).state())));
  assert.deepEqual((await drain(again)).map((s) => s.id), got.map((s) => s.id));
  await again.close();
  // A corrupt footer refuses the shard, naming it.
  const tail = bytes.slice();
  tail.fill(0x41, tail.length - 40, tail.length - 8);
  await Deno.writeFile(dst, tail);
  const broken = await make();
  await assert.rejects(drain(broken), /train-00000-of-00002\.parquet: not a readable parquet file/);
  await broken.close();
  await Deno.remove(dir, { recursive: true });
});

// ------------------------------------------------------------------------------ class 6

Deno.test("tokenizer: errors name the file and the field", async () => {
  const dir = await tmp();
  const tj = join(dir, "tokenizer.json");
  await assert.rejects(TextTokenizer.fromDir(dir), /missing .*tokenizer\.json/);
  await Deno.writeTextFile(tj, '{"model": {"type": "BPE", "vocab": {}, "merges": []},');
  await assert.rejects(TextTokenizer.fromDir(dir), /tokenizer\.json:1:\d+: invalid JSON/);
  await Deno.writeTextFile(tj, JSON.stringify({ version: "1.0" }));
  await assert.rejects(
    TextTokenizer.fromDir(dir),
    /tokenizer\.json: field "model" must be an object/,
  );
  const model = { type: "BPE", vocab: { a: 0, b: 1 }, merges: [] };
  await Deno.writeTextFile(
    tj,
    JSON.stringify({ model, added_tokens: [{ id: 2, content: "<x>" }, { id: "3", content: "y" }] }),
  );
  await assert.rejects(
    TextTokenizer.fromDir(dir),
    /tokenizer\.json: field "added_tokens\[1\]\.id" must be a non-negative integer/,
  );
  await Deno.writeTextFile(tj, JSON.stringify({ model }));
  await Deno.writeTextFile(join(dir, "tokenizer_config.json"), JSON.stringify({ eos_token: 5 }));
  await assert.rejects(
    TextTokenizer.fromDir(dir),
    /tokenizer_config\.json: field "eos_token" must be a string or \{content: string\}/,
  );
  await Deno.remove(dir, { recursive: true });
});
