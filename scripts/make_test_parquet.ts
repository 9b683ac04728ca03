/**
 * Writes the committed data fixtures of tests/data_*_test.ts (dev script; the tests only read
 * the files it leaves in tests/fixtures/data/).
 *
 *   deno run -A scripts/make_test_parquet.ts
 *
 * - finevision/alpha/train-0000{0,1}-of-00002.parquet (snappy, row groups of 3 rows): multi-turn
 *   texts, unicode, a corrupt (truncated) JPEG, a WebP, a row without images, a row without
 *   texts, a refusal answer; plus FineVision's extra rating columns, which readers ignore.
 * - finevision/data/beta/train-00000-of-00001.parquet (zstd, row groups of 2): simple rows, in
 *   the `data/<subset>/` layout.
 * - llava/llava.json and llava/llava.jsonl: LLaVA conversations over the images in images/
 *   (one missing file, one record without image, one malformed conversation).
 *
 * Images come from tests/fixtures/data/images/ (written by make_images.py with Pillow).
 */

import { DuckDBInstance } from "@duckdb/node-api";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "tests", "fixtures", "data");
const img = (name: string) => Deno.readFileSync(join(root, "images", name));

interface Row {
  images: { bytes: Uint8Array; path: string }[];
  texts: { user: string; assistant: string }[];
  source: string;
}

const jpeg = img("rgb.jpg");
const alpha: Row[] = [
  {
    images: [{ bytes: img("rgb.png"), path: "a0.png" }],
    texts: [
      { user: "What kind of picture is this?", assistant: "A colourful striped pattern." },
      { user: "Which colours stand out?", assistant: "Mostly red, green and blue stripes." },
    ],
    source: "alpha",
  },
  {
    images: [{ bytes: jpeg, path: "a1.jpg" }],
    texts: [{ user: "Is this a photo?", assistant: "No, it is a synthetic test pattern." }],
    source: "alpha",
  },
  {
    images: [{ bytes: jpeg.slice(0, 200), path: "a2_truncated.jpg" }],
    texts: [{ user: "What is shown?", assistant: "This image is corrupt." }],
    source: "alpha",
  },
  {
    images: [],
    texts: [{ user: "What is shown?", assistant: "There is no image in this row." }],
    source: "alpha",
  },
  {
    images: [{ bytes: img("gray.jpg"), path: "a4.jpg" }],
    texts: [{ user: "Describe it.", assistant: "I'm sorry, but I cannot see images." }],
    source: "alpha",
  },
  {
    images: [{ bytes: img("still.gif"), path: "a5.gif" }],
    texts: [
      { user: "<image>\nQu'est-ce que c'est ?", assistant: "Un motif — 日本語 テスト 🎉." },
      { user: "Et les couleurs ?", assistant: "Rouge, vert et bleu." },
      { user: "Combien de bandes ?", assistant: "Beaucoup." },
    ],
    source: "alpha",
  },
  {
    images: [{ bytes: img("photo.webp"), path: "a6.webp" }],
    texts: [{ user: "What format is this?", assistant: "WebP." }],
    source: "alpha",
  },
  {
    images: [{ bytes: img("palette.png"), path: "a7.png" }],
    texts: [],
    source: "alpha",
  },
];
const alpha2: Row[] = [
  {
    images: [{ bytes: img("palette.png"), path: "b0.png" }],
    texts: [{ user: "How many colours does it use?", assistant: "Sixteen." }],
    source: "alpha",
  },
  {
    images: [{ bytes: img("cmyk.jpg"), path: "b1.jpg" }],
    texts: [{ user: "Which colour model?", assistant: "CMYK." }],
    source: "alpha",
  },
];
const beta: Row[] = Array.from({ length: 5 }, (_, i) => ({
  images: [{ bytes: img(i % 2 ? "rgba.png" : "progressive.jpg"), path: `beta${i}.img` }],
  texts: [{ user: `Beta question ${i}?`, assistant: `Beta answer ${i}.` }],
  source: "beta",
}));

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
const str = (s: string) => `'${s.replaceAll("'", "''")}'`;

function rowSql(r: Row): string {
  const images = r.images.length
    ? `[${r.images.map((i) => `{'bytes': from_hex('${hex(i.bytes)}'), 'path': ${str(i.path)}}`)}]`
    : `[]::STRUCT(bytes BLOB, path VARCHAR)[]`;
  const texts = r.texts.length
    ? `[${r.texts.map((t) => `{'user': ${str(t.user)}, 'assistant': ${str(t.assistant)}}`)}]`
    : `[]::STRUCT("user" VARCHAR, assistant VARCHAR)[]`;
  const ratings = `[${r.texts.map(() => 5).join(",")}]::TINYINT[]`;
  return `SELECT ${images} AS images, ${texts} AS texts, ${str(r.source)} AS source, ` +
    `${ratings} AS relevance_ratings, ${r.texts.length ? 5 : "NULL"}::TINYINT AS relevance_min`;
}

const db = await (await DuckDBInstance.create(":memory:")).connect();
async function write(rows: Row[], path: string, codec: string, rowGroup: number) {
  await Deno.mkdir(dirname(path), { recursive: true });
  const sql = rows.map(rowSql).join("\nUNION ALL\n");
  await db.run(`CREATE OR REPLACE TABLE t AS SELECT * FROM (${sql})`);
  await db.run(
    `COPY (SELECT * FROM t) TO '${path}' (FORMAT parquet, COMPRESSION ${codec}, ` +
      `ROW_GROUP_SIZE ${rowGroup})`,
  );
  console.log(`${path}: ${rows.length} rows, ${codec}, ${(await Deno.stat(path)).size} bytes`);
}
// DuckDB keeps row order for a plain table scan with one thread.
await db.run("SET threads = 1");
const fv = join(root, "finevision");
await write(alpha, join(fv, "alpha", "train-00000-of-00002.parquet"), "snappy", 3);
await write(alpha2, join(fv, "alpha", "train-00001-of-00002.parquet"), "snappy", 3);
await write(beta, join(fv, "data", "beta", "train-00000-of-00001.parquet"), "zstd", 2);

const llava = [
  {
    id: "l1",
    image: "rgb.png",
    conversations: [
      { from: "human", value: "<image>\nWhat is in the picture?" },
      { from: "gpt", value: "A striped test pattern." },
      { from: "human", value: "Is it a photograph?" },
      { from: "gpt", value: "No, it was generated." },
    ],
  },
  {
    id: "l2",
    image: "rgb.jpg",
    conversations: [
      { from: "human", value: "Describe the colours.\n<image>" },
      { from: "gpt", value: "Red, green and blue bands." },
    ],
  },
  {
    id: "l3",
    image: "does_not_exist.png",
    conversations: [{ from: "human", value: "<image>\nHi?" }, { from: "gpt", value: "Hello." }],
  },
  {
    id: "l4",
    conversations: [{ from: "human", value: "No image here?" }, { from: "gpt", value: "None." }],
  },
  { id: "l5", image: "still.gif", conversations: [{ from: "human", value: "<image>\nAlone?" }] },
  {
    id: "l6",
    image: "photo.webp",
    conversations: [{ from: "human", value: "<image>\nFormat?" }, { from: "gpt", value: "WebP." }],
  },
  {
    id: "l7",
    image: "palette.png",
    conversations: [
      { from: "system", value: "ignored" },
      { from: "human", value: "How many colours?" },
      { from: "gpt", value: "Sixteen." },
    ],
  },
];
await Deno.mkdir(join(root, "llava"), { recursive: true });
await Deno.writeTextFile(join(root, "llava", "llava.json"), JSON.stringify(llava, null, 1) + "\n");
await Deno.writeTextFile(
  join(root, "llava", "llava.jsonl"),
  llava.map((r) => JSON.stringify(r)).join("\n") + "\n",
);
console.log("llava fixtures written");
