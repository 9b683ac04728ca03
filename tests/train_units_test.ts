// Unit tests of the training pieces that need no model: schedules, AdamW + clipping (GPU vs a
// float64 reference), TensorBoard framing, the SVG plot, flag parsing, checkpoint directories,
// progress lines and the metrics log.

import assert from "node:assert/strict";
import { join } from "node:path";
import { LrSchedule, warmupStepsFor } from "../src/train/schedule.ts";
import { AdamW } from "../src/train/optimizer.ts";
import {
  crc32c,
  decodeEvent,
  maskedCrc32c,
  readRecords,
  TensorBoardWriter,
} from "../src/train/tensorboard.ts";
import { lossPlotSvg, niceTicks } from "../src/train/plot.ts";
import { finalizeArgs, parseTrainArgs, trainHelp } from "../src/train/args.ts";
import {
  findRuns,
  listCheckpoints,
  removeStaleTemps,
  resolveResume,
  rotateCheckpoints,
  runDirName,
  saveCheckpointDir,
  shortModelName,
} from "../src/train/checkpoint.ts";
import { formatDuration, Progress } from "../src/train/progress.ts";
import { MetricsLog, readMetrics } from "../src/train/metrics.ts";
import { Tensor } from "../src/tensor/mod.ts";
import { writeSafetensors } from "../src/io/safetensors.ts";
import { assertClose, gpu, GPU_TEST, rand } from "./util.ts";

Deno.test("cosine schedule with warmup matches the HF formula", () => {
  const w = warmupStepsFor(100, 0.03);
  assert.equal(w, 3);
  const s = new LrSchedule({ type: "cosine", baseLr: 1e-3, totalSteps: 103, warmupSteps: 3 });
  assert.equal(s.lr(0), 0);
  assertClose([s.lr(1), s.lr(2), s.lr(3)], [1e-3 / 3, 2e-3 / 3, 1e-3], 1e-12, "warmup");
  assertClose([s.factor(53)], [0.5], 1e-12, "midpoint");
  assert.ok(Math.abs(s.factor(103)) < 1e-15);
  for (let k = 3; k < 103; k++) assert.ok(s.factor(k + 1) <= s.factor(k), `monotone at ${k}`);
  const c = new LrSchedule({ type: "constant", baseLr: 2e-5, totalSteps: 10, warmupSteps: 0 });
  assert.equal(c.lr(0), 2e-5);
  assert.equal(c.lr(9), 2e-5);
  const l = new LrSchedule({ type: "linear", baseLr: 1, totalSteps: 10, warmupSteps: 2 });
  assertClose([l.lr(1), l.lr(2), l.lr(6), l.lr(10)], [0.5, 1, 0.5, 0], 1e-12, "linear");
  s.step = 7;
  const st = s.state();
  const s2 = new LrSchedule({ type: "cosine", baseLr: 1e-3, totalSteps: 103, warmupSteps: 3 });
  s2.restore(st);
  assert.equal(s2.lr(), s.lr());
  const other = new LrSchedule({ type: "cosine", baseLr: 1e-3, totalSteps: 50, warmupSteps: 2 });
  assert.throws(() => other.restore(st), /does not match/);
});

// float64 reference of torch AdamW + clip_grad_norm_ over several tensors.
function refAdamW(
  params: Float64Array[],
  grads: Float64Array[][],
  decay: boolean[],
  lr: number,
  maxNorm: number,
): { params: Float64Array[]; norms: number[] } {
  const p = params.map((x) => Float64Array.from(x));
  const m = p.map((x) => new Float64Array(x.length));
  const v = p.map((x) => new Float64Array(x.length));
  const norms: number[] = [];
  grads.forEach((gs, k) => {
    let ss = 0;
    for (const g of gs) for (const x of g) ss += x * x;
    const n = Math.sqrt(ss);
    norms.push(n);
    const c = Math.min(1, maxNorm / (n + 1e-6));
    const t = k + 1;
    p.forEach((pi, i) => {
      const wd = decay[i] ? 0.01 : 0;
      for (let j = 0; j < pi.length; j++) {
        const g = gs[i][j] * c;
        m[i][j] = 0.9 * m[i][j] + 0.1 * g;
        v[i][j] = 0.999 * v[i][j] + 0.001 * g * g;
        pi[j] *= 1 - lr * wd;
        pi[j] -= (lr / (1 - 0.9 ** t)) * m[i][j] /
          (Math.sqrt(v[i][j]) / Math.sqrt(1 - 0.999 ** t) + 1e-8);
      }
    });
  });
  return { params: p, norms };
}

Deno.test("AdamW with GPU clipping matches a float64 torch-style reference", GPU_TEST, async () => {
  const g = await gpu();
  const w0 = rand(6 * 5, 1), b0 = rand(5, 2);
  const w = Tensor.from(g, w0, [6, 5]), b = Tensor.from(g, b0, [5]);
  w.requiresGrad = b.requiresGrad = true;
  const opt = new AdamW([["w", w], ["b", b]], { maxGradNorm: 1.0 });
  assert.deepEqual(opt.noDecayNames, ["b"]);
  const grads: Float64Array[][] = [];
  const norms: number[] = [];
  for (let k = 0; k < 3; k++) {
    // Step 1 has a small gradient (no clipping), the others large ones.
    const s = k === 1 ? 0.01 : 2;
    const gw = Float64Array.from(rand(30, 10 + k), (x) => x * s);
    const gb = Float64Array.from(rand(5, 20 + k), (x) => x * s);
    grads.push([gw, gb]);
    w.grad = Tensor.from(g, Float32Array.from(gw), [6, 5]);
    b.grad = Tensor.from(g, Float32Array.from(gb), [5]);
    const r = opt.update(1e-2);
    norms.push(Math.sqrt(await r.sumsq.item()));
    const coef = await r.coef.read();
    assert.equal(coef[1], 1);
    r.sumsq.dispose();
    r.coef.dispose();
    assert.equal(w.grad, null);
  }
  const ref = refAdamW(
    [Float64Array.from(w0), Float64Array.from(b0)],
    grads,
    [true, false],
    1e-2,
    1,
  );
  assertClose(norms, ref.norms, 1e-6, "grad norms");
  assertClose(await w.read(), ref.params[0], 1e-6, "w");
  assertClose(await b.read(), ref.params[1], 1e-6, "b");
  // A non-finite gradient skips the update entirely.
  const before = await w.read();
  w.grad = Tensor.from(g, new Float32Array(30).fill(NaN), [6, 5]);
  b.grad = Tensor.from(g, new Float32Array(5), [5]);
  const r = opt.update(1e-2);
  assert.equal((await r.coef.read())[1], 0);
  assert.deepEqual(await w.read(), before);
  // Moments round-trip through export/import.
  const st = await opt.exportState();
  const opt2 = new AdamW([["w", w], ["b", b]]);
  opt2.importState(st.step, (n) => st.tensors.get(n));
  assert.deepEqual(await opt2.params[0].m.read(), await opt.params[0].m.read());
  assert.throws(() => opt2.importState(1, () => undefined), /no exp_avg/);
  opt.dispose();
  opt2.dispose();
  w.dispose();
  b.dispose();
});

Deno.test("TensorBoard event files: CRC-32C, framing and scalar events", () => {
  assert.equal(crc32c(new TextEncoder().encode("123456789")), 0xe3069283);
  assert.equal(crc32c(new Uint8Array(32)), 0x8a9136aa);
  const dir = Deno.makeTempDirSync();
  const w = TensorBoardWriter.open(dir, 1_700_000_000_000);
  w.scalars(5, { "train/loss": 1.25, "train/lr": 1e-3 }, 1_700_000_001_000);
  w.scalars(10, { "train/loss": 0.5 });
  w.close();
  assert.match(w.path, /events\.out\.tfevents\.1700000000\./);
  const bytes = Deno.readFileSync(w.path);
  const recs = readRecords(bytes).map(decodeEvent);
  assert.equal(recs.length, 3);
  assert.equal(recs[0].fileVersion, "brain.Event:2");
  assert.equal(recs[1].step, 5);
  assert.equal(recs[1].wallTime, 1_700_000_001);
  assert.deepEqual(recs[1].scalars, [["train/loss", 1.25], ["train/lr", Math.fround(1e-3)]]);
  assert.deepEqual(recs[2].scalars, [["train/loss", 0.5]]);
  // A flipped byte is detected.
  bytes[20] ^= 1;
  assert.throws(() => readRecords(bytes), /CRC/);
  assert.equal(maskedCrc32c(new Uint8Array(0)), ((0 >>> 15 | 0 << 17) + 0xa282ead8) >>> 0);
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("SVG loss plot", () => {
  assert.deepEqual(niceTicks(0, 1, 5), [0, 0.2, 0.4, 0.6000000000000001, 0.8, 1]);
  const svg = lossPlotSvg([
    { name: "train loss", points: [[1, 3], [2, 2.5], [3, NaN], [4, 1]] },
    { name: "eval <loss>", points: [[2, 2.7], [4, 1.4]], markers: true },
  ], { title: "t" });
  assert.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  assert.equal((svg.match(/<polyline/g) ?? []).length, 2); // train splits at NaN: 2 pts + 1 pt
  assert.match(svg, /eval &lt;loss&gt;/);
  assert.equal((svg.match(/<circle/g) ?? []).length, 2);
  assert.ok(svg.trim().endsWith("</svg>"));
});

Deno.test("train flags: original spellings, defaults, contradictions", () => {
  const p = parseTrainArgs([
    "--stage",
    "2",
    "--use_lora",
    "--lora_target_modules",
    "q_proj,v_proj",
    "--max_steps",
    "-1",
    "--no_bf16",
    "--sub_sets=a,b",
    "--sub_sets_weights",
    "1,3",
    "--no_distributed",
  ]);
  const a = finalizeArgs(p.args, p.explicit);
  assert.equal(a.stage, 2);
  assert.equal(a.learning_rate, 2e-5);
  assert.deepEqual(a.lora_target_modules, ["q_proj", "v_proj"]);
  assert.equal(a.max_steps, -1);
  assert.equal(a.bf16, false);
  assert.deepEqual(a.sub_sets_weights, [1, 3]);
  assert.equal(a.use_distributed, false);
  assert.equal(a.freeze_text_model, false);
  const d = finalizeArgs(parseTrainArgs([]).args, new Set());
  assert.equal(d.stage, 1);
  assert.equal(d.learning_rate, 1e-3);
  assert.equal(d.bf16, true);
  assert.equal(d.lora_r, 64);
  assert.equal(d.lora_alpha, 16);
  assert.equal(d.lora_dropout, 0.05);
  assert.equal(d.lora_target_modules.length, 7);
  assert.equal(parseTrainArgs([], { STAGE: "2" }).args.stage, 2);
  const fp = parseTrainArgs(["--fp16"]);
  assert.equal(finalizeArgs(fp.args, fp.explicit).bf16, false);
  const bad: [string[], RegExp][] = [
    [["--learning_rat", "1"], /unknown flag --learning_rat \(did you mean --learning_rate\?\)/],
    [["--bogus"], /unknown flag --bogus/],
    [["--max_steps", "x"], /--max_steps: expected an integer/],
    [["--bf16", "--fp16"], /contradict/],
    [["--use_lora"], /--use_lora needs --stage 2/],
    [["--stage", "2", "--lora_r", "8"], /--lora_r has no effect without --use_lora/],
    [["--sub_sets", "a,b", "--sub_sets_weights", "1"], /one weight per subset/],
    [["--stage", "5"], /--stage: must be one of 1, 2, 3, 4/],
    [["--stage_1_checkpoint_path", "x"], /is for --stage 2/],
    [["--no_freeze_text_model"], /contradicts --stage 1/],
    [["--stage", "2", "--use_lora", "--lora_target_modules", "q_proj,foo"], /unknown module/],
    [["--gen_num_beams", "3", "--gen_temperature", "0.7"], /beam/],
    [["--hub_model_id", "a/b"], /without --push_to_hub/],
    [["--seed", "1", "--seed", "2"], /given twice/],
    [["--use_distributed"], /one WebGPU device/],
    [["stray"], /see --help/],
  ];
  for (const [argv, re] of bad) {
    assert.throws(
      () => {
        const q = parseTrainArgs(argv);
        finalizeArgs(q.args, q.explicit);
      },
      re,
      argv.join(" "),
    );
  }
  const help = trainHelp();
  for (const f of ["--data_path", "--gen_num_beams", "--resume_from_checkpoint", "bfloat16"]) {
    assert.ok(help.includes(f), f);
  }
});

/** The files of a complete checkpoint (resume skips damaged ones), with tiny tensors. */
async function checkpointFiles(dir: string, step: number): Promise<void> {
  const w = { dtype: "F32" as const, shape: [1], data: new Float32Array([1]) };
  await writeSafetensors(join(dir, "trainable.safetensors"), { w });
  await writeSafetensors(join(dir, "optimizer.safetensors"), { w });
  for (const f of ["scheduler.json", "data_state.json", "rng_state.json"]) {
    await Deno.writeTextFile(join(dir, f), "{}");
  }
  await Deno.writeTextFile(join(dir, "trainer_state.json"), `{"global_step":${step}}`);
}

Deno.test("checkpoint dirs: names, atomic save, rotation, discovery, resume", async () => {
  assert.equal(shortModelName("google/siglip2-base-patch16-224"), "siglip2-base-patch16-224");
  assert.equal(shortModelName("Qwen/Qwen2.5-0.5B-Instruct"), "qwen2.5-0.5b-instruct");
  assert.equal(shortModelName("/x/my_model/"), "my-model");
  const name = runDirName("a/V_1", "b/T", 1, new Date(2025, 0, 2, 3, 4, 5));
  assert.equal(name, "siq-vl_v-1_t_stage1_20250102_030405");
  const out = Deno.makeTempDirSync();
  const sd = join(out, name, "stage1");
  for (const step of [2, 4, 6]) {
    await saveCheckpointDir(sd, step, (tmp) => checkpointFiles(tmp, step));
  }
  // A failed save leaves nothing behind; a crashed one (temp dir) is ignored and cleaned.
  await assert.rejects(
    saveCheckpointDir(sd, 8, () => Promise.reject(new Error("disk full"))),
    /disk full/,
  );
  Deno.mkdirSync(join(sd, ".checkpoint-10.tmp-99999"));
  assert.deepEqual(listCheckpoints(sd).map((c) => c.step), [2, 4, 6]);
  assert.deepEqual(removeStaleTemps(sd), [".checkpoint-10.tmp-99999"]);
  rotateCheckpoints(sd, 2);
  assert.deepEqual(listCheckpoints(sd).map((c) => c.step), [4, 6]);
  // The best (protected) and the newest always stay.
  rotateCheckpoints(sd, 1, join(sd, "checkpoint-4"));
  assert.deepEqual(listCheckpoints(sd).map((c) => c.step), [4, 6]);
  rotateCheckpoints(sd, 1);
  assert.deepEqual(listCheckpoints(sd).map((c) => c.step), [6]);
  await saveCheckpointDir(sd, 4, (tmp) => checkpointFiles(tmp, 4));
  const r = resolveResume("latest", out, "a/V_1", "b/T", 1);
  assert.equal(r.checkpoint, join(sd, "checkpoint-6"));
  assert.equal(resolveResume(sd, out, "a/V_1", "b/T", 1).checkpoint, join(sd, "checkpoint-6"));
  assert.throws(() => resolveResume("latest", out, "a/V_1", "b/T", 2), /no siq-vl_v-1_t_stage2/);
  const older = join(out, "siq-vl_v-1_t_stage1_20240101_000000", "stage1");
  Deno.mkdirSync(older, { recursive: true });
  assert.deepEqual(findRuns(out, "a/V_1", "b/T", 1).map((f) => f.stageDir), [sd, older]);
  Deno.removeSync(out, { recursive: true });
});

Deno.test("progress: plain periodic lines without a TTY; metrics log", () => {
  assert.equal(formatDuration(3725), "1:02:05");
  assert.equal(formatDuration(65), "1:05");
  let t = 0;
  const lines: string[] = [];
  const p = new Progress(10, 0, {
    label: "s1",
    intervalSec: 5,
    sink: { write: (s) => void lines.push(s), isTTY: false },
    now: () => t,
  });
  for (let s = 1; s <= 10; s++) {
    t += 2000;
    p.update(s, `loss ${s}`);
  }
  // Every 5 s of the fake clock (2 s per step) plus the last step; no carriage returns.
  assert.ok(lines.length >= 4 && lines.length <= 5, String(lines.length));
  assert.ok(lines.every((l) => l.endsWith("\n") && !l.includes("\r")));
  assert.match(lines[lines.length - 1], /s1 10\/10 \(100%\) elapsed 0:20 eta 0:00 \| loss 10/);
  const tty: string[] = [];
  const q = new Progress(4, 2, { sink: { write: (s) => void tty.push(s), isTTY: true } });
  q.update(3);
  // deno-lint-ignore no-control-regex
  assert.match(tty[0], /^\r\x1b\[2K/);
  const dir = Deno.makeTempDirSync();
  const log = new MetricsLog(join(dir, "m.jsonl"), { tensorboardDir: join(dir, "tb") });
  log.log({ type: "train", step: 1, loss: 2 });
  log.log({ type: "eval", step: 1, loss: NaN });
  log.close();
  const back = readMetrics(join(dir, "m.jsonl"));
  assert.equal(back.length, 2);
  assert.equal(back[1].loss, "NaN");
  assert.deepEqual(log.trainLoss(), [[1, 2]]);
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("small byte-level BPE tokenizer in HF format, with Qwen special tokens", async () => {
  const { trainByteLevelBpe, smallTokenizerConfig, preTokenize } = await import(
    "../src/demo/small_tokenizer.ts"
  );
  const { TextTokenizer } = await import("../src/data/tokenizer.ts");
  assert.deepEqual(preTokenize("What color is it?\nred"), [
    "What",
    " color",
    " is",
    " it",
    "?\n",
    "red",
  ]);
  const corpus = ["What color is the shape?", "red", "blue", "How many shapes are there?", "two"];
  const t = trainByteLevelBpe([...corpus, ...corpus], { maxMerges: 50 });
  assert.ok(t.baseVocabSize > 256 && t.baseVocabSize <= 306);
  assert.equal(t.specialIds["<|endoftext|>"], t.baseVocabSize);
  assert.equal(t.vocabSize, t.baseVocabSize + 14);
  const tok = new TextTokenizer(t.tokenizerJson, smallTokenizerConfig(t));
  const text = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>\nWhat color is " +
    "the shape? Über<|im_end|>\n";
  const ids = tok.encode(text);
  assert.equal(tok.decode(ids), text); // byte-level: any text round-trips, seen or not
  assert.ok(ids.includes(t.specialIds["<|image_pad|>"]));
  assert.ok(tok.encode(" color").length === 1, "a frequent word is one token");
  assert.equal(tok.eosId, t.specialIds["<|im_end|>"]);
  assert.equal(tok.padId, t.specialIds["<|endoftext|>"]);
});

Deno.test("data loader (training use): deterministic order, exact resume, prefetch-independent", async () => {
  const { trainByteLevelBpe, smallTokenizerConfig } = await import(
    "../src/demo/small_tokenizer.ts"
  );
  const { TextTokenizer } = await import("../src/data/tokenizer.ts");
  const { SiqvlProcessor } = await import("../src/data/processor.ts");
  const { ShapesDataset, generateShapesSample } = await import("../src/data/datasets/shapes.ts");
  const { DataLoader } = await import("../src/data/loader.ts");
  const corpus: string[] = [];
  for (let i = 0; i < 200; i++) {
    const s = generateShapesSample(1, i, 16);
    corpus.push(s.question, s.answer);
  }
  const t = trainByteLevelBpe(corpus, { maxMerges: 100 });
  const tokenizer = new TextTokenizer(t.tokenizerJson, smallTokenizerConfig(t));
  const processor = new SiqvlProcessor({ tokenizer, tokensPerImage: 4, imageSize: 32 });
  const mk = (prefetch: number) =>
    new DataLoader({
      dataset: new ShapesDataset({ seed: 3, imageSize: 32, length: 10 }),
      processor,
      batchSize: 4,
      prefetch,
    });
  const a = mk(1), b = mk(8);
  const seqA = [], seqB = [];
  for (let i = 0; i < 6; i++) {
    const batch = (await a.next())!;
    seqA.push({ data: batch, ids: batch.ids as string[], stateAfter: a.state() });
    seqB.push((await b.next())!);
  }
  for (let i = 0; i < 6; i++) {
    assert.deepEqual(seqA[i].data.inputIds, seqB[i].inputIds);
    assert.deepEqual(seqA[i].ids, seqB[i].ids);
  }
  // 10 samples per pass, batches of 4: the third batch spans passes 0 and 1.
  assert.deepEqual(seqA[2].ids.map((x) => x.split(":")[2]), ["8", "9", "0", "1"]);
  assert.equal(seqA[2].stateAfter.epoch, 1);
  const d = seqA[0].data;
  assert.equal(d.pixelShape!.join(), "4,3,32,32");
  assert.equal(d.labels!.length, d.batch * d.seqLen);
  // Labels: the answer and <|im_end|>, nothing else.
  const row = Array.from(d.labels!.subarray(0, d.seqLen)).filter((l) => l !== -100);
  assert.equal(row[row.length - 1], t.specialIds["<|im_end|>"]);
  assert.equal(tokenizer.decode(row.slice(0, -1)), d.answers[0]);
  // The label tokens are counted once, in the batch (shifted: the first label is not a target).
  assert.equal(d.numLossTokens, Array.from(d.labels!).filter((l) => l !== -100).length);
  // Resume after batch 2 in a fresh loader (with prefetch): batches 3.. are identical.
  const c = mk(3);
  await c.restore(seqA[1].stateAfter);
  for (let i = 2; i < 6; i++) assert.deepEqual((await c.next())!.ids, seqA[i].ids);
  await a.close();
  await b.close();
  await c.close();
});
