// Stage 3/4 data: generated CoT shapes scenes and preference pairs (pure functions of the seed,
// answers consistent with what was drawn, resumable), and column-mapped reasoning / preference
// records from JSONL and parquet.

import {
  COT_KINDS,
  CotShapesDataset,
  generateCotShapesSample,
} from "../src/data/datasets/cot_shapes.ts";
import {
  generatePreferenceSample,
  ShapesPreferenceDataset,
} from "../src/data/datasets/preference.ts";
import { type PreferenceSample, RecordsDataset } from "../src/data/datasets/records.ts";
import type { ReasoningSample } from "../src/data/datasets/cot_shapes.ts";
import { splitReasoning } from "../src/data/reasoning.ts";
import { SHAPE_COLORS } from "../src/data/datasets/shapes.ts";

/** The colour of the pixel at a shape's centre. */
function colorAt(img: { width: number; data: Uint8Array }, x: number, y: number): string | null {
  const p = (Math.round(y) * img.width + Math.round(x)) * 3;
  const px = [img.data[p], img.data[p + 1], img.data[p + 2]];
  for (const [name, c] of Object.entries(SHAPE_COLORS)) {
    if (c.every((v, i) => Math.abs(v - px[i]) < 40)) return name;
  }
  return null;
}

Deno.test("cot_shapes: answers follow from the drawn scene; pure and resumable", async () => {
  const words = ["one", "two", "three", "four"];
  for (let i = 0; i < 300; i++) {
    const s = generateCotShapesSample(3, i, 48, "think");
    const again = generateCotShapesSample(3, i, 48, "think");
    if (s.answer !== again.answer || s.image.data.some((v, k) => v !== again.image.data[k])) {
      throw new Error(`sample ${i} is not a pure function of (seed, index)`);
    }
    // the pixels hold the colours the rationale is written from
    s.shapes.forEach((sh) => {
      const c = colorAt(
        s.image,
        sh.cx,
        sh.cy + (sh.kind === "triangle" ? sh.r / 2 : 0),
      );
      if (c !== sh.color) throw new Error(`sample ${i}: drew ${c} for a ${sh.color} ${sh.kind}`);
    });
    const split = splitReasoning(s.answer, "think");
    if (!split.wellFormed || split.answer !== s.finalAnswer) {
      throw new Error(`sample ${i}: ${s.answer} does not split into ${s.finalAnswer}`);
    }
    const [a, b] = s.asked;
    const colors = s.shapes.map((x) => x.color);
    const want = s.kind === "count_color"
      ? words[colors.filter((c) => c === a).length - 1]
      : s.kind === "left_right"
      ? (s.shapes[colors.indexOf(a)].cx < s.shapes[colors.indexOf(b)].cx ? "left" : "right")
      : s.shapes.reduce((m, x) => (x.cx < m.cx ? x : m)).color;
    if (s.finalAnswer !== want) {
      throw new Error(`sample ${i} (${s.kind}): ${s.finalAnswer} vs ${want}`);
    }
  }
  const ds = new CotShapesDataset({ seed: 5, format: "llava-cot" });
  for (let i = 0; i < 7; i++) await ds.next();
  const st = ds.state();
  const want = (await ds.next())!;
  const fresh = new CotShapesDataset({ seed: 5, format: "llava-cot" });
  fresh.restore(st);
  const got = (await fresh.next())!;
  if (got.id !== want.id || got.answer !== want.answer) throw new Error("resume");
  if (!want.answer.includes("<CONCLUSION>")) throw new Error("llava-cot format");
  let threw = false;
  try {
    new CotShapesDataset({ seed: 6 }).restore(st);
  } catch (e) {
    threw = String(e).includes("seed 5");
  }
  if (!threw) throw new Error("a state of another seed must be refused");
  if (COT_KINDS.length !== 3) throw new Error("kinds");
});

Deno.test("preference: chosen is right, rejected is wrong or unsupported", async () => {
  const seen = new Set<string>();
  for (let i = 0; i < 400; i++) {
    const p = generatePreferenceSample(9, i, 48, "think");
    seen.add(p.rejection);
    const c = splitReasoning(p.chosen, "think"), r = splitReasoning(p.rejected, "think");
    if (c.answer !== p.finalAnswer) throw new Error(`pair ${i}: chosen answers ${c.answer}`);
    if (r.answer === p.finalAnswer) {
      throw new Error(`pair ${i} (${p.rejection}): rejected is right`);
    }
    if ((p.rejection === "unsupported") !== (r.reasoning === "")) {
      throw new Error(`pair ${i}: ${p.rejection} with reasoning "${r.reasoning}"`);
    }
    if (p.rejection === "wrong fact" && r.reasoning === c.reasoning) {
      throw new Error(`pair ${i}: a wrong fact needs a different rationale`);
    }
  }
  if (seen.size !== 3) throw new Error(`rejection kinds seen: ${[...seen]}`);
  const ds = new ShapesPreferenceDataset({ seed: 2, length: 3 });
  let n = 0;
  while (await ds.next()) n++;
  if (n !== 3) throw new Error(`length ${n}`);
});

Deno.test("records: JSONL reasoning and preference rows mapped by columns", async () => {
  const dir = await Deno.makeTempDir();
  await Deno.copyFile("tests/fixtures/data/images/rgb.jpg", `${dir}/a.jpg`);
  const reasoning = [
    { id: 1, image: "a.jpg", problem: "2+2?", solution: "two and two", answer: "4" },
    {
      id: 2,
      image: "a.jpg",
      problem: "Pick",
      solution: "b is right",
      answer: 1,
      choices: ["x", "y"],
    },
    { id: 3, image: "a.jpg", problem: "no answer", solution: "s", answer: "" },
    { id: 4, image: "../outside.jpg", problem: "q", solution: "s", answer: "a" },
    { id: 5, problem: "no image", answer: "a" },
  ];
  await Deno.writeTextFile(`${dir}/r.jsonl`, reasoning.map((r) => JSON.stringify(r)).join("\n"));
  const ds = await RecordsDataset.load({
    file: `${dir}/r.jsonl`,
    kind: "reasoning",
    shuffle: false,
  });
  const a = (await ds.next()) as ReasoningSample;
  if (a.answer !== "<think>two and two</think>\n4" || a.question !== "2+2?") {
    throw new Error(`mapped ${JSON.stringify(a.answer)}`);
  }
  if (!(a.image instanceof Uint8Array)) throw new Error("image bytes");
  const b = (await ds.next()) as ReasoningSample;
  if (b.finalAnswer !== "B" || !b.question.endsWith("Options: (A) x (B) y")) {
    throw new Error(`choices: ${b.finalAnswer} / ${b.question}`);
  }
  if (await ds.next()) throw new Error("the outside image must be skipped");
  const skips = ds.skips.counts;
  if (skips["empty answer"] !== 1 || skips["no image"] !== 1 || skips["outside the folder"] !== 1) {
    throw new Error(`skips ${JSON.stringify(skips)}`);
  }
  // explicit columns, TRL's conversational preference form
  const pref = [
    {
      img: "a.jpg",
      prompt: [
        { role: "user", content: [{ type: "image" }, { type: "text", text: "What is it?" }] },
      ],
      good: [{ role: "assistant", content: [{ type: "text", text: "A cat." }] }],
      bad: [{ role: "assistant", content: "A dog." }],
    },
    { img: "a.jpg", prompt: "same", good: "x", bad: "x" },
  ];
  await Deno.writeTextFile(`${dir}/p.json`, JSON.stringify(pref));
  const pd = await RecordsDataset.load({
    file: `${dir}/p.json`,
    kind: "preference",
    columns: { image: "img", chosen: "good", rejected: "bad" },
  });
  const p = (await pd.next()) as PreferenceSample;
  if (p.question !== "What is it?" || p.chosen !== "A cat." || p.rejected !== "A dog.") {
    throw new Error(`preference ${JSON.stringify([p.question, p.chosen, p.rejected])}`);
  }
  if (pd.skips.counts["chosen equals rejected"] !== 1) throw new Error("equal pair skip");
  const fails = async (f: () => Promise<unknown>, msg: string) => {
    try {
      await f();
    } catch (e) {
      if (!String(e).includes(msg)) throw new Error(`expected "${msg}", got ${e}`);
      return;
    }
    throw new Error(`expected an error "${msg}"`);
  };
  await fails(
    () =>
      RecordsDataset.load({ file: `${dir}/p.json`, kind: "preference", columns: { image: "img" } }),
    "no chosen column",
  );
  await fails(
    () =>
      RecordsDataset.load({
        file: `${dir}/r.jsonl`,
        kind: "reasoning",
        columns: { answer: "ans" },
      }),
    "--answer_column ans is not a column",
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("records: parquet rows keep image bytes and decode text columns", async () => {
  const ds = await RecordsDataset.load({
    file: "tests/fixtures/data/finevision/alpha/train-00000-of-00002.parquet",
    kind: "reasoning",
    columns: { question: "source", answer: "source" },
    shuffle: false,
  });
  const s = (await ds.next()) as ReasoningSample;
  const img = s.image as Uint8Array;
  if (!(img instanceof Uint8Array) || img[0] !== 0x89 || typeof s.question !== "string") {
    throw new Error("parquet image bytes / text");
  }
  if (s.finalAnswer !== s.question) throw new Error("text column decoded once");
});
