// The task runner end to end: small generated parquet in the lmms-lab VQAv2 column layout, read
// from a local folder and from the fake hub (through the hub cache) with the shipped vqav2 task
// file; batched generation gives the same tokens as one prompt at a time; score mode agrees with
// the runner; bad task files and missing splits / columns fail naming the file and the field.

import assert from "node:assert/strict";
import { join } from "node:path";
import { DuckDBInstance } from "@duckdb/node-api";
import { Image } from "../src/deps.ts";
import { generateShapesSample } from "../src/data/datasets/shapes.ts";
import { ImagePool } from "../src/data/image_pool.ts";
import { DEMO_CONFIG, heldOutSamples, prepareDemoModels } from "../src/demo/demo.ts";
import { generationEval } from "../src/train/gen_eval.ts";
import { generate } from "../src/infer/generate.ts";
import { openSiqvl, type SiqvlBundle } from "../src/models/factory.ts";
import { noGrad, Tensor } from "../src/tensor/tensor.ts";
import { splitFiles } from "../src/eval/dataset.ts";
import { runTask, type SampleRecord } from "../src/eval/runner.ts";
import { scoreJsonl } from "../src/eval/score.ts";
import { loadTask, parseTask, shippedTasks } from "../src/eval/task.ts";
import { main as evalCli } from "../cli/eval.ts";
import { FakeHub, quiet, withEnv } from "./fake_hub.ts";
import { gpu, GPU_TEST } from "./util.ts";

const N = 6;

async function png(img: { width: number; height: number; data: Uint8Array }): Promise<Uint8Array> {
  const out = new Image(img.width, img.height);
  for (let i = 0; i < img.width * img.height; i++) {
    out.bitmap.set([img.data[3 * i], img.data[3 * i + 1], img.data[3 * i + 2], 255], 4 * i);
  }
  return await out.encode();
}

const hexOf = (b: Uint8Array) => [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
const sql = (s: string) => `'${s.replaceAll("'", "''")}'`;

/** Rows in lmms-lab/VQAv2's layout written to `path` (answers: 10 per question). */
async function writeVqaParquet(
  path: string,
  rows: { q: string; answers: string[]; png: Uint8Array }[],
) {
  await Deno.mkdir(join(path, ".."), { recursive: true });
  const values = rows.map((r, i) => {
    const answers = r.answers.map((a, k) =>
      `{'answer': ${sql(a)}, 'answer_confidence': 'yes', 'answer_id': ${k + 1}}`
    );
    return `('what color', ${sql(r.answers[0])}, [${answers.join(", ")}], ${1000 + i}, 'other', ` +
      `${5000 + i}, ${sql(r.q)}, {'bytes': from_hex('${hexOf(r.png)}'), 'path': 'img${i}.png'})`;
  });
  const db = await DuckDBInstance.create(":memory:");
  const c = await db.connect();
  try {
    await c.run(
      `COPY (SELECT * FROM (VALUES ${values.join(", ")}) AS t(question_type, ` +
        `multiple_choice_answer, answers, image_id, answer_type, question_id, question, image)) ` +
        `TO ${sql(path)} (FORMAT parquet, ROW_GROUP_SIZE 4)`,
    );
  } finally {
    c.closeSync();
    db.closeSync();
  }
}

let shared:
  | { bundle: SiqvlBundle; dir: string; samples: Awaited<ReturnType<typeof makeSamples>> }
  | undefined;

async function makeSamples() {
  const out = [];
  for (let i = 0; i < N; i++) {
    const s = generateShapesSample(5, i, DEMO_CONFIG.imageSize);
    out.push({ q: s.question, answer: s.answer, png: await png(s.image) });
  }
  return out;
}

async function setup() {
  if (shared) return shared;
  const dir = await Deno.makeTempDir({ prefix: "siqvl-eval-" });
  // Larger initial weights than the demo's, so that an untrained model says varied things.
  const init = { ...DEMO_CONFIG.init, embedStd: 1, projStd: 0.5, residualScale: 1 };
  const models = await prepareDemoModels(join(dir, "models"), { ...DEMO_CONFIG, init });
  const g = await gpu();
  const bundle = await openSiqvl(g, {
    vision: models.vision,
    text: models.text,
    projector: { factor: DEMO_CONFIG.pixelShuffle },
    seed: 3,
  });
  shared = { bundle, dir, samples: await makeSamples() };
  return shared;
}

function localTask(dir: string, over: Record<string, unknown> = {}) {
  const file = join(dir, "local_vqa.json");
  const doc = {
    task: "local_vqa",
    dataset: { path: join(dir, "vqa"), split: "validation" },
    images: ["image"],
    id: "question_id",
    prompt: "{question}\nAnswer the question using a single word or phrase.",
    answers: "answers[].answer",
    metrics: ["vqa_accuracy", "exact_match:gqa"],
    generation: { max_new_tokens: 6 },
    ...over,
  };
  return { file, doc };
}

Deno.test("eval: split files in the lmms-lab / datasets layouts", () => {
  const paths = [
    "README.md",
    "data/validation-00000-of-00002.parquet",
    "data/validation-00001-of-00002.parquet",
    "data/test-00000-of-00001.parquet",
    "DocVQA/validation-00000-of-00001.parquet",
    "InfographicVQA/validation-00000-of-00001.parquet",
    "cfg/val/a.parquet",
    "mmstar.parquet",
  ];
  assert.deepEqual(splitFiles(paths, undefined, "validation"), [
    "data/validation-00000-of-00002.parquet",
    "data/validation-00001-of-00002.parquet",
  ]);
  assert.deepEqual(splitFiles(paths, "DocVQA", "validation"), [
    "DocVQA/validation-00000-of-00001.parquet",
  ]);
  assert.deepEqual(splitFiles(paths, "cfg", "val"), ["cfg/val/a.parquet"]);
  assert.deepEqual(splitFiles(paths, undefined, "train"), []);
});

Deno.test("eval: every shipped task file parses; bad task files name the file and field", async () => {
  const names = shippedTasks();
  for (
    const t of [
      "shapes",
      "vqav2",
      "textvqa",
      "docvqa",
      "chartqa",
      "mmstar",
      "scienceqa_img",
      "pope",
      "gqa",
    ]
  ) {
    assert.ok(names.includes(t), t);
    await loadTask(t);
  }
  const base = localTask("/tmp/x").doc;
  const bad = (over: Record<string, unknown>, re: RegExp) =>
    assert.throws(() => parseTask({ ...base, ...over }, "tasks/bad.json"), re);
  bad({ metrics: ["bleu"] }, /tasks\/bad\.json: field "metrics\[0\]": unknown metric "bleu"/);
  bad({ metrics: ["vqa_accuracy:nope"] }, /field "metrics\[0\]".*unknown rules/);
  bad({ colour: 1 }, /field "colour": unknown field/);
  bad({ generation: { max_tokens: 3 } }, /field "generation\.max_tokens": unknown field/);
  bad({ num_fewshot: 5 }, /field "num_fewshot"/);
  bad({ prompt: "{question|upper}" }, /field "prompt": unknown filter/);
  bad({ dataset: { hub: "nope", split: "x" } }, /field "dataset\.hub"/);
  bad({ dataset: { generator: "dots" } }, /field "dataset\.generator"/);
  bad({ answers: undefined }, /field "answers": metric vqa_accuracy:vqav2 needs reference answers/);
  await assert.rejects(() => loadTask("no_such_task"), /unknown task "no_such_task"/);
});

Deno.test({
  name: "eval: local lmms-lab parquet → batched run = one-by-one; unknown column / split errors",
  ...GPU_TEST,
  fn: async () => {
    const { bundle, dir, samples } = await setup();
    await writeVqaParquet(
      join(dir, "vqa", "data", "validation-00000-of-00001.parquet"),
      samples.map((s) => ({ q: s.q, answers: Array(10).fill(s.answer), png: s.png })),
    );
    const { file, doc } = localTask(dir);
    const task = parseTask(doc, file);
    const pool = new ImagePool({ workers: 1 });
    try {
      const one = await runTask(bundle, task, { pool, batchSize: 1 });
      const four = await runTask(bundle, task, { pool, batchSize: 4 });
      assert.equal(one.result.n, N);
      assert.deepEqual(four.samples.map((s) => s.raw), one.samples.map((s) => s.raw));
      assert.deepEqual(four.samples.map((s) => s.tokens), one.samples.map((s) => s.tokens));
      // Not a trivial agreement: rows run to different lengths and say different things.
      assert.ok(one.samples.some((s) => s.tokens > 1));
      assert.ok(new Set(one.samples.map((s) => s.raw)).size > 1);
      assert.deepEqual(one.samples.map((s) => s.id), samples.map((_, i) => String(5000 + i)));
      assert.equal(one.samples[0].references.length, 10);
      assert.ok(one.samples[0].question.endsWith("single word or phrase."));
      assert.deepEqual(Object.keys(one.result.metrics), ["vqa_accuracy", "exact_match"]);
      assert.ok(one.result.generated_tokens > 0 && one.result.tokens_per_second > 0);

      // generate() as the runner calls it: a ragged batch of 3 = each prompt alone, and a row
      // that meets a stop id stops there while the others go on (token ids compared).
      const proc = bundle.processor;
      const S = proc.image.size;
      const gen = async (rows: number[], stop: number[]) => {
        const px = await Promise.all(rows.map((r) => pool.process(samples[r].png, proc.image)));
        const flat = new Float32Array(rows.length * 3 * S * S);
        px.forEach((p, k) => flat.set(p, k * 3 * S * S));
        const pixels = noGrad(() =>
          Tensor.from(bundle.model.gpu, flat, [rows.length, 3, S, S], "f32")
        );
        const ids = rows.map((r) =>
          Array.from(proc.encodePrompt(r === 1 ? "Why?" : one.samples[r].question).inputIds)
        );
        try {
          return await generate(bundle.model, { inputIds: ids, pixelValues: pixels }, {
            maxNewTokens: 6,
            stopTokenIds: stop,
            padTokenId: proc.ids.pad,
          });
        } finally {
          pixels.dispose();
        }
      };
      const alone = [];
      for (const r of [0, 1, 2]) alone.push((await gen([r], proc.stopIds())).tokens[0]);
      assert.notEqual(alone[0].length, 0);
      const early = alone[0][2]; // row 0 stops at its third token in the batch
      const batch = await gen([0, 1, 2], [...proc.stopIds(), early]);
      assert.deepEqual(batch.tokens[0], alone[0].slice(0, alone[0].indexOf(early) + 1));
      assert.equal(batch.finishReasons[0], "stop");
      for (const r of [1, 2]) {
        const cut = alone[r].indexOf(early);
        assert.deepEqual(
          batch.tokens[r],
          cut < 0 ? alone[r] : alone[r].slice(0, cut + 1),
          `row ${r}`,
        );
      }
      assert.ok(alone[2].length === one.samples[2].tokens);

      // Rows about the same image share its vision-tower pass, with the same answers.
      await writeVqaParquet(
        join(dir, "shared", "data", "validation.parquet"),
        samples.map((s, i) => ({
          q: s.q,
          answers: Array(10).fill(s.answer),
          png: samples[i < 4 ? 0 : 1].png,
        })),
      );
      const shared = parseTask(
        localTask(dir, { dataset: { path: join(dir, "shared"), split: "validation" } }).doc,
        file,
      );
      const sep = await runTask(bundle, shared, { pool, batchSize: 1 });
      const joint = await runTask(bundle, shared, { pool, batchSize: 6 });
      assert.equal(sep.result.images_encoded, N);
      assert.equal(joint.result.images_encoded, 2);
      assert.deepEqual(joint.samples.map((s) => s.raw), sep.samples.map((s) => s.raw));

      // Unknown column, missing split: errors name the task file and the field.
      const badCol = parseTask({ ...doc, answers: "labels[].answer" }, file);
      await assert.rejects(
        () => runTask(bundle, badCol, { pool }),
        new RegExp(
          `${file}: field "answers": column "labels" is not in folder .*columns: ` +
            `question_type, multiple_choice_answer, answers`,
        ),
      );
      const badSplit = parseTask(
        { ...doc, dataset: { path: join(dir, "vqa"), split: "test" } },
        file,
      );
      await assert.rejects(
        () => runTask(bundle, badSplit, { pool }),
        /field "dataset\.split": no files for split "test" in folder .*validation-00000-of-00001/,
      );
    } finally {
      pool.close();
    }
  },
});

Deno.test({
  name: "eval: the shapes task scores as the demo's generation eval (answers and accuracy)",
  ...GPU_TEST,
  fn: async () => {
    const { bundle } = await setup();
    const pool = new ImagePool({ workers: 0 });
    try {
      const held = heldOutSamples(DEMO_CONFIG, 24);
      const demo = await generationEval(bundle.model, bundle.processor, pool, held, {
        maxNewTokens: 4,
        temperature: 0,
        numBeams: 1,
        batchSize: 64,
      });
      const { result, samples } = await runTask(bundle, await loadTask("shapes"), {
        pool,
        batchSize: 8,
        limit: 24,
      });
      assert.deepEqual(samples.map((s) => s.prediction), demo.rows.map((r) => r.answer));
      assert.deepEqual(samples.map((s) => s.score), demo.rows.map((r) => (r.exact ? 1 : 0)));
      assert.equal(result.metrics.exact_match, demo.exactMatch);
    } finally {
      pool.close();
    }
  },
});

Deno.test({
  name: "eval: shipped vqav2 task from the fake hub; CLI results, samples, score mode, compare",
  ...GPU_TEST,
  fn: async () => {
    const { bundle, dir, samples } = await setup();
    const pool = new ImagePool({ workers: 0 });
    // What the model answers, to build references the scores can be worked out from.
    let preds: SampleRecord[];
    try {
      preds = (await runTask(
        bundle,
        parseTask(
          localTask(dir, {
            generation: { max_new_tokens: 16 },
          }).doc,
          "probe.json",
        ),
        { pool, batchSize: 3 },
      )).samples;
    } finally {
      pool.close();
    }
    // Questions 0–2: all 10 annotators gave the model's answer (1.0); 3: three did (0.9);
    // 4–5: none (0) → mean (3 + 0.9) / 6 = 0.65.
    const rows = samples.map((s, i) => {
      const p = preds[i].prediction;
      const answers = i < 3
        ? Array(10).fill(p)
        : i === 3
        ? [p, p, p, ...Array(7).fill("zzz")]
        : Array(10).fill("zzz");
      return { q: s.q, answers, png: s.png };
    });
    const repoDir = join(dir, "repo");
    const pq = join(repoDir, "data", "validation-00000-of-00001.parquet");
    await writeVqaParquet(pq, rows);
    const hub = new FakeHub();
    hub.addRepo("datasets/lmms-lab/VQAv2", {
      "README.md": "# VQAv2 (test copy)\n",
      "data/validation-00000-of-00001.parquet": await Deno.readFile(pq),
    });
    const model = join(dir, "ckpt");
    const { saveSiqvl } = await import("../src/models/checkpoint.ts");
    await saveSiqvl(bundle.model, model, { processorFrom: bundle.tokenizerFrom });
    const out = join(dir, "out");
    try {
      await withEnv({ HF_ENDPOINT: hub.url, HF_HOME: join(dir, "hf") }, async () => {
        const lines: string[] = [];
        const r = await quiet(() =>
          evalCli([
            "--checkpoint",
            model,
            "--tasks",
            "vqav2,shapes",
            "--limit",
            String(N),
            "--batch_size",
            "4",
            "--workers",
            "0",
            "--max_new_tokens",
            "16",
            "--output_dir",
            out,
          ], (s) => lines.push(s))
        );
        const vqa = r!.tasks[0];
        assert.equal(vqa.task, "vqav2");
        assert.equal(vqa.n, N);
        assert.ok(Math.abs(vqa.metrics.vqa_accuracy - 0.65) < 1e-12, `${vqa.metrics.vqa_accuracy}`);
        assert.match(vqa.data, /hub dataset lmms-lab\/VQAv2@main/);
        assert.equal(r!.tasks[1].task, "shapes");
        assert.equal(r!.tasks[1].n, N);
        assert.match(r!.checkpoint_hash, /^[0-9a-f]{16}$/);
        const saved = JSON.parse(await Deno.readTextFile(join(out, "results.json")));
        assert.equal(saved.tasks[0].task_hash, vqa.task_hash);
        assert.match(
          await Deno.readTextFile(join(out, "results.md")),
          /\| vqav2 \| vqa_accuracy \| 0\.6500 \| 6 \|/,
        );
        assert.ok(lines.some((l) => l.startsWith("[eval] vqav2: vqa_accuracy 0.6500")));

        // Score mode on the per-sample JSONL reproduces the runner's number.
        const jsonl = (await Deno.readTextFile(join(out, "samples_vqav2.jsonl"))).trim().split("\n")
          .map((l) => JSON.parse(l)).map((s) =>
            JSON.stringify({ prediction: s.prediction, answers: s.references })
          )
          .join("\n");
        const scoreFile = join(dir, "preds.jsonl");
        await Deno.writeTextFile(scoreFile, jsonl);
        assert.equal(
          scoreJsonl(jsonl, "vqa_accuracy").values.vqa_accuracy,
          vqa.metrics.vqa_accuracy,
        );
        const printed: string[] = [];
        await evalCli(["--score", scoreFile, "--metric", "vqa_accuracy"], (s) => printed.push(s));
        assert.equal(printed.at(-1), "vqa_accuracy: 0.6500 (6 samples)");
        const cmp: string[] = [];
        await evalCli(["--compare", `${out},${out}`], (s) => cmp.push(s));
        assert.match(cmp[0], /\| vqav2 \| vqa_accuracy \| 0\.6500 \(n=6\) \| 0\.6500 \(n=6\) \|/);
      });
    } finally {
      await hub.close();
      shared?.bundle.dispose();
      shared = undefined;
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("eval: score mode for multiple choice, yes/no; --help needs no GPU", async () => {
  const mc = [
    { prediction: "The answer is B", choices: ["cat", "dog"], answer: "B" },
    { prediction: "(A) cat", choices: ["cat", "dog"], answer: "B" },
    { prediction: "dog", choices: ["cat", "dog"], answer: "B" },
    { prediction: "A", choices: ["cat", "dog"], answer: "A" },
  ].map((o) => JSON.stringify(o)).join("\n");
  const r = scoreJsonl(mc, "mc_accuracy", "mc.jsonl");
  assert.equal(r.values.mc_accuracy, 0.75);
  assert.equal(r.n, 4);
  // Reasoning output: the final answer after </think>, inside <CONCLUSION>, on the last line.
  const cot = [
    {
      prediction: "<think>A looks right, but the tail says B.</think>\nB",
      choices: ["cat", "dog"],
      answer: "B",
    },
  ].map((o) => JSON.stringify(o)).join("\n");
  assert.equal(scoreJsonl(cot, "mc_accuracy:scienceqa", "c", "think").values.mc_accuracy, 1);
  assert.equal(scoreJsonl(cot, "mc_accuracy:scienceqa", "c").values.mc_accuracy, 0); // raw text
  const llava = JSON.stringify({
    prediction: "<REASONING>two</REASONING>\n<CONCLUSION>Two.</CONCLUSION>",
    answers: Array(10).fill("2"),
  });
  assert.equal(scoreJsonl(llava, "vqa_accuracy", "x", "llava-cot").values.vqa_accuracy, 1);
  const plain = JSON.stringify({
    prediction: "It has three sides.\nAnswer: triangle",
    answers: ["triangle"],
  });
  assert.equal(scoreJsonl(plain, "exact_match", "x", "plain").values.exact_match, 1);
  const pope = ['{"prediction":"Yes","answers":["yes"]}', '{"prediction":"No","answers":["yes"]}']
    .join("\n");
  assert.equal(scoreJsonl(pope, "yes_no").values.yes_no_recall, 0.5);
  assert.throws(
    () => scoreJsonl('{"prediction": 3}', "anls", "p.jsonl"),
    /p\.jsonl:1: "prediction" must be a string/,
  );
  assert.throws(() => scoreJsonl("{}\n", "nope"), /unknown metric "nope"/);
  const help: string[] = [];
  await evalCli(["--help"], (s) => help.push(s));
  assert.match(help[0], /--score FILE --metric M/);
  await assert.rejects(() => evalCli(["--tasks", "shapes"]), /--checkpoint is required/);
});
