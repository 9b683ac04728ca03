// Hardening of runs and exports (issue 15): run locks and stale temps (class 10), damaged newest
// checkpoints skipped and --run_name runs found by "latest" (10), failed starts leaving no run
// folder (10), non-finite weights never saved, exported or resumed from (7), --save_pytorch_bin
// for sharded weights and extras that never remove the final model (11), unambiguous LoRA
// exports with a relative or hub base model (13).

import assert from "node:assert/strict";
import { join, resolve } from "node:path";
import { trainFromArgv } from "../src/train/trainer.ts";
import { DEMO_CONFIG, type DemoConfig, prepareDemoModels } from "../src/demo/demo.ts";
import {
  checkpointProblem,
  listCheckpoints,
  LOCK_FILE,
  lockRunDir,
  removeStaleTemps,
  resolveResume,
} from "../src/train/checkpoint.ts";
import { adapterBaseName, safetensorsToTorchBin } from "../src/train/export.ts";
import { openTensors } from "../src/io/reader.ts";
import { writeSafetensors } from "../src/io/safetensors.ts";
import { writeStateDict } from "../src/io/state_dict.ts";
import { GPU_TEST } from "./util.ts";

const tmp = () => Deno.makeTempDir({ prefix: "siqvl_harden_train_" });

/** A checkpoint directory with valid (tiny) files, as saveTrainingCheckpoint writes them. */
async function fakeCheckpoint(stageDir: string, step: number): Promise<string> {
  const dir = join(stageDir, `checkpoint-${step}`);
  await Deno.mkdir(dir, { recursive: true });
  const w = { dtype: "F32" as const, shape: [2], data: new Float32Array([1, 2]) };
  await writeSafetensors(join(dir, "trainable.safetensors"), { w }, { format: "pt" });
  await writeSafetensors(join(dir, "optimizer.safetensors"), { "m.w": w }, { step: "1" });
  for (const f of ["scheduler.json", "data_state.json", "rng_state.json"]) {
    await Deno.writeTextFile(join(dir, f), "{}");
  }
  await Deno.writeTextFile(join(dir, "trainer_state.json"), JSON.stringify({ global_step: step }));
  return dir;
}

Deno.test("run lock: a second trainer refuses naming the PID; a dead holder's lock is taken", async () => {
  const dir = await tmp();
  const release = lockRunDir(dir);
  assert.throws(() => lockRunDir(dir), /in use: process \d+ is training in it/);
  release();
  // A lock held by a live process (pid 1) refuses; one of a finished process is taken over.
  await Deno.writeTextFile(join(dir, LOCK_FILE), "1\n");
  assert.throws(() => lockRunDir(dir), /in use: process 1 is training in it/);
  const child = new Deno.Command("true").spawn();
  await child.status;
  await Deno.writeTextFile(join(dir, LOCK_FILE), `${child.pid}\n`);
  const again = lockRunDir(dir);
  assert.equal((await Deno.readTextFile(join(dir, LOCK_FILE))).trim(), String(Deno.pid));
  again();
  assert.ok(![...Deno.readDirSync(dir)].length, "released lock removed");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("stale temp dirs are removed only when their process is gone", async () => {
  const dir = await tmp();
  const child = new Deno.Command("true").spawn();
  await child.status;
  const live = [`.checkpoint-4.tmp-1`, `.final.tmp-${Deno.pid}`];
  const dead = [`.checkpoint-6.tmp-${child.pid}`, `.final.tmp-${child.pid}`];
  for (const n of [...live, ...dead]) await Deno.mkdir(join(dir, n));
  assert.deepEqual(removeStaleTemps(dir).sort(), dead.sort());
  assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), live.sort());
  await Deno.remove(dir, { recursive: true });
});

Deno.test("resume: a damaged newest checkpoint is skipped for the newest good one", async () => {
  const out = await tmp();
  const sd = join(out, "siq-vl_v_t_stage1_20260101_000000", "stage1");
  const good = await fakeCheckpoint(sd, 2);
  const bad = await fakeCheckpoint(sd, 4);
  assert.equal(checkpointProblem(bad), null);
  // Truncate the newest checkpoint's weights (a crash of the disk, a copy cut short).
  const p = join(bad, "trainable.safetensors");
  const bytes = await Deno.readFile(p);
  await Deno.writeFile(p, bytes.subarray(0, bytes.length - 3));
  assert.match(checkpointProblem(bad)!, /trainable\.safetensors/);
  const r = resolveResume("latest", out, "v", "t", 1);
  assert.equal(r.checkpoint, good);
  assert.match(r.skipped[0], /checkpoint-4 is damaged \(trainable\.safetensors: .*\); skipped/);
  const byDir = resolveResume(sd, out, "v", "t", 1);
  assert.equal(byDir.checkpoint, good);
  await Deno.writeTextFile(join(good, "trainer_state.json"), "{oops");
  assert.throws(() => resolveResume("latest", out, "v", "t", 1), /no usable checkpoint|usable/);
  await Deno.remove(out, { recursive: true });
});

Deno.test("resume latest finds runs made with --run_name", async () => {
  const out = await tmp();
  const older = await fakeCheckpoint(join(out, "siq-vl_v_t_stage2_20260101_000000", "stage2"), 3);
  assert.ok(older);
  await new Promise((r) => setTimeout(r, 20));
  const named = await fakeCheckpoint(join(out, "my-run", "stage2"), 7);
  assert.equal(resolveResume("latest", out, "v", "t", 2, "my-run").checkpoint, named);
  // Without the name the generated-name run is found, as before.
  assert.equal(resolveResume("latest", out, "v", "t", 2).checkpoint, older);
  await Deno.remove(out, { recursive: true });
});

Deno.test("--save_pytorch_bin works for sharded weights and keeps the safetensors", async () => {
  const dir = await tmp();
  const t = (v: number) => ({
    dtype: "F32" as const,
    shape: [16],
    data: new Float32Array(16).fill(v),
  });
  await writeStateDict(dir, { a: t(1), b: t(2), c: t(3) }, { maxShardBytes: 70 });
  assert.ok([...Deno.readDirSync(dir)].some((e) => e.name === "model.safetensors.index.json"));
  await safetensorsToTorchBin(dir);
  const names = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
  assert.ok(names.includes("pytorch_model.bin.index.json"), names.join(", "));
  assert.ok(names.includes("model.safetensors.index.json"), "safetensors kept");
  const r = await openTensors(join(dir, "pytorch_model.bin.index.json"));
  assert.deepEqual([...await r.readF32("c")], new Array(16).fill(3));
  r.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("LoRA adapter base_model_name_or_path: a hub id, or a path relative to the export", () => {
  assert.equal(
    adapterBaseName("Qwen/Qwen2.5-0.5B-Instruct", "/runs/a/stage2"),
    "Qwen/Qwen2.5-0.5B-Instruct",
  );
  assert.equal(adapterBaseName("/models/qwen", "/runs/a/stage2"), "../../../models/qwen");
  const rel = adapterBaseName("./models/qwen", "out/run/stage2");
  assert.ok(!rel.startsWith("/"), rel);
  assert.equal(resolve("out/run/stage2", rel), resolve("./models/qwen"));
});

// ------------------------------------------------------------------ end to end (tiny model)

const TINY: DemoConfig = {
  ...DEMO_CONFIG,
  imageSize: 32,
  vision: { patchSize: 8, hidden: 32, layers: 1, heads: 2, intermediate: 64 },
  text: { hidden: 64, layers: 1, heads: 4, kvHeads: 2, intermediate: 128 },
};
const quiet = () => {};

function argv(m: { vision: string; text: string }, out: string, extra: string[] = []): string[] {
  const base = [
    "--data_path",
    "shapes:24",
    "--vision_model_name_or_path",
    m.vision,
    "--text_model_name_or_path",
    m.text,
    "--output_dir",
    out,
    "--per_device_train_batch_size",
    "4",
    "--gradient_accumulation_steps",
    "1",
    "--no_bf16",
    "--logging_steps",
    "1",
    "--max_eval_samples",
    "4",
    "--gen_samples",
    "0",
    "--dataloader_num_workers",
    "1",
    "--max_steps",
    "3",
    "--save_steps",
    "1",
  ];
  // A flag in `extra` that takes a value replaces the default one.
  for (let i = 0; i < extra.length; i++) {
    const at = base.indexOf(extra[i]);
    const valued = i + 1 < extra.length && !extra[i + 1].startsWith("--");
    if (at >= 0 && valued) base[at + 1] = extra[++i];
    else if (valued) base.push(extra[i], extra[++i]);
    else base.push(extra[i]);
  }
  return base;
}

Deno.test({
  name:
    "e2e: export loads in PyTorch layout; non-finite weights are not resumed; failed starts leave nothing",
  ...GPU_TEST,
  fn: async () => {
    const root = await tmp();
    try {
      const m = await prepareDemoModels(join(root, "models"), TINY);
      const out = join(root, "out");
      const logs: string[] = [];
      const run = (a: string[]) =>
        trainFromArgv(a, { log: (s) => logs.push(s), progress: { write: quiet, isTTY: false } });
      const r = await run(argv(m, out, ["--save_pytorch_bin", "--run_name", "hard"]));
      assert.equal(r.status, "completed");
      const fin = r.finalDir!;
      const cfg = JSON.parse(await Deno.readTextFile(join(fin, "config.json")));
      assert.equal(cfg.auto_map.AutoModelForCausalLM, "modeling_siqvl.SiQ_VLForCausalLM");
      assert.equal(cfg.torch_dtype, "float32");
      for (
        const f of [
          "modeling_siqvl.py",
          "pytorch_model.bin",
          "vision/config.json",
          "text/model.safetensors",
        ]
      ) {
        assert.ok(Deno.statSync(join(fin, f)).isFile, f);
      }
      assert.ok(![...Deno.readDirSync(r.stageDir)].some((e) => e.name === LOCK_FILE), "unlocked");

      // Mid-run checkpoints carry config.json + weights + processor files: they load too.
      {
        const { openSiqvl } = await import("../src/models/factory.ts");
        const { Gpu } = await import("../src/gpu/device.ts");
        const cp = listCheckpoints(r.stageDir)[0].path;
        for (
          const f of ["config.json", "model.safetensors", "tokenizer.json", "modeling_siqvl.py"]
        ) {
          assert.ok(Deno.statSync(join(cp, f)).isFile, `${cp}/${f}`);
        }
        const b = await openSiqvl(await Gpu.get(), { checkpoint: cp });
        const tr = await openTensors(join(cp, "trainable.safetensors"));
        const name = tr.keys().find((k) => k.startsWith("projector."))!;
        const p = b.model.namedParameters().find(([n]) => n === name)![1];
        assert.deepEqual([...await p.value.readF32()], [...await tr.readF32(name)]);
        tr.close();
        b.dispose();
      }

      // Stage 2 with LoRA: the export says it needs the adapter; merged/ is merged in f32.
      const r2 = await run(argv(m, out, [
        "--stage",
        "2",
        "--use_lora",
        "--lora_r",
        "4",
        "--lora_alpha",
        "8",
        "--learning_rate",
        "5e-3",
        "--merge_lora",
        "--save_pytorch_bin",
        "--run_name",
        "lora",
        "--stage_1_checkpoint_path",
        r.finalDir!,
      ]));
      assert.equal(r2.status, "completed");
      const d2 = r2.finalDir!;
      const c2 = JSON.parse(await Deno.readTextFile(join(d2, "config.json")));
      assert.equal(c2.siqvl_lora.merged, false);
      assert.match(c2.siqvl_lora.note, /BASE language model weights/);
      assert.match(await Deno.readTextFile(join(d2, "README.md")), /needs this adapter/);
      const ac = JSON.parse(await Deno.readTextFile(join(d2, "adapter_config.json")));
      assert.ok(!ac.base_model_name_or_path.startsWith("/"), ac.base_model_name_or_path);
      assert.equal(resolve(d2, ac.base_model_name_or_path), resolve(m.text));
      const merged = join(d2, "merged");
      const cm = JSON.parse(await Deno.readTextFile(join(merged, "config.json")));
      assert.equal(cm.siqvl_lora, undefined, "merged/ needs no adapter");
      assert.equal(cm.torch_dtype, "float32");
      for (
        const f of [
          "model.safetensors",
          "pytorch_model.bin",
          "modeling_siqvl.py",
          "text/config.json",
        ]
      ) {
        assert.ok(Deno.statSync(join(merged, f)).isFile, `merged/${f}`);
      }
      // merged W = W + (alpha / r)·B·A, against an f64 reference.
      const base = await openTensors(join(d2, "model.safetensors"));
      const ad = await openTensors(join(d2, "adapter_model.safetensors"));
      const mg = await openTensors(join(merged, "model.safetensors"));
      const aKey = ad.keys().find((k) => /layers\.0\.self_attn\.q_proj\.lora_A/.test(k))!;
      const bKey = aKey.replace("lora_A", "lora_B");
      const wKey = "text_model.model.layers.0.self_attn.q_proj.weight";
      const [W, A, B, M] = await Promise.all([
        base.readF32(wKey),
        ad.readF32(aKey),
        ad.readF32(bKey),
        mg.readF32(wKey),
      ]);
      const [rr, inF] = ad.info(aKey).shape;
      const outF = ad.info(bKey).shape[0];
      let worst = 0;
      for (let o = 0; o < outF; o++) {
        for (let i = 0; i < inF; i++) {
          let d = 0;
          for (let k = 0; k < rr; k++) d += B[o * rr + k] * A[k * inF + i];
          const want = W[o * inF + i] + (8 / 4) * d;
          worst = Math.max(worst, Math.abs(M[o * inF + i] - want));
        }
      }
      assert.ok(worst < 1e-6, `merged weights off by ${worst}`);
      for (const t of [base, ad, mg]) t.close();

      // Resume refuses a checkpoint whose trainable weights hold NaN, naming it.
      const cps = listCheckpoints(r.stageDir);
      const last = cps[cps.length - 1].path;
      const tr = await openTensors(join(last, "trainable.safetensors"));
      const tensors: Record<string, { dtype: "F32"; shape: number[]; data: Float32Array }> = {};
      for (const k of tr.keys()) {
        const v = await tr.readF32(k);
        v[0] = NaN;
        tensors[k] = { dtype: "F32", shape: tr.info(k).shape, data: v };
      }
      tr.close();
      await writeSafetensors(join(last, "trainable.safetensors"), tensors, {
        format: "pt",
        step: "2",
      });
      await assert.rejects(
        run(
          argv(m, out, [
            "--save_pytorch_bin",
            "--run_name",
            "hard",
            "--resume_from_checkpoint",
            last,
          ]),
        ),
        new RegExp(
          `cannot resume from ${
            last.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")
          }: the trainable weights hold \\d+ non-finite`,
        ),
      );

      // A data state that does not fit this data names data_state.json.
      const first = cps[0].path;
      await Deno.writeTextFile(join(first, "data_state.json"), '{"dataset": {"kind": "bogus"}}');
      await assert.rejects(
        run(
          argv(m, out, [
            "--save_pytorch_bin",
            "--run_name",
            "hard",
            "--resume_from_checkpoint",
            first,
          ]),
        ),
        /checkpoint-1\/data_state\.json: /,
      );

      // A run that fails at start (no such data) leaves no run folder behind.
      const before = [...Deno.readDirSync(out)].map((e) => e.name).sort();
      await assert.rejects(
        run(argv(m, out, ["--data_path", join(root, "missing.json"), "--run_name", "broken"])),
      );
      assert.deepEqual([...Deno.readDirSync(out)].map((e) => e.name).sort(), before);

      // A learning rate far outside sane bounds warns.
      logs.length = 0;
      await run(argv(m, out, ["--learning_rate", "0.5", "--run_name", "lr"]))
        .catch((e) => logs.push(`error: ${e.message}`));
      assert.ok(logs.some((l) => /--learning_rate 0.5 is far outside the usual range/.test(l)));
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
});

Deno.test("collator: over-long rows are dropped (overLong drop) or cut outside the image run", async () => {
  const { fitToLength } = await import("../src/data/collator.ts");
  const ids = { pad: 0, imagePad: 9, visionStart: 8, visionEnd: 7 } as never;
  const s = {
    inputIds: Int32Array.from([1, 8, 9, 7, 2, 3, 4, 5]),
    labels: Int32Array.from([-100, -100, -100, -100, 2, 3, 4, 5]),
    pixelValues: [] as Float32Array[],
  };
  const drop = fitToLength(s, { ids, imageSize: 2, maxLength: 6, overLong: "drop" });
  assert.deepEqual(drop, { ok: false, reason: "max_length 6 is exceeded (sequence of 8 tokens)" });
  const cut = fitToLength(s, { ids, imageSize: 2, maxLength: 6 });
  assert.ok(cut.ok && cut.sample.inputIds.length === 6);
});

Deno.test({
  name: "e2e: skip counts by reason at start-up, in metrics.jsonl, progress and the summary",
  ...GPU_TEST,
  fn: async () => {
    const root = await tmp();
    try {
      const m = await prepareDemoModels(join(root, "models"), TINY);
      const data = join(root, "data");
      await Deno.mkdir(data);
      const img = new URL("./fixtures/data/images/rgb.png", import.meta.url);
      await Deno.copyFile(img, join(data, "a.png"));
      await Deno.copyFile(img, join(root, "outside.png"));
      const conv = (q: string) => [{ from: "human", value: `<image>\n${q}` }, {
        from: "gpt",
        value: "Stripes.",
      }];
      const records: unknown[] = [];
      for (let i = 0; i < 10; i++) {
        records.push({ id: `ok${i}`, image: "a.png", conversations: conv("What?") });
      }
      records.push({ id: "noimg", conversations: conv("Hi?") });
      records.push({ id: "out", image: "../outside.png", conversations: conv("What?") });
      records.push({ id: "long", image: "a.png", conversations: conv("word ".repeat(6000)) });
      const file = join(data, "train.json");
      await Deno.writeTextFile(file, JSON.stringify(records));
      const logs: string[] = [];
      const progress: string[] = [];
      const r = await trainFromArgv(
        argv(m, join(root, "out"), [
          "--data_path",
          file,
          "--max_steps",
          "4",
          "--max_eval_samples",
          "0",
        ]),
        { log: (s) => logs.push(s), progress: { write: (s) => progress.push(s), isTTY: false } },
      );
      assert.equal(r.status, "completed");
      assert.ok(
        logs.some((l) => /skipped while opening the data \(first pass\): no image 1/.test(l)),
        logs.join("\n"),
      );
      const summary = logs.find((l) => l.startsWith("[siqvl] samples skipped:"))!;
      assert.match(summary, /no image 1/);
      assert.match(summary, /outside the folder [1-9]/);
      assert.match(summary, /too long [1-9]/);
      const recs = (await Deno.readTextFile(join(r.stageDir, "metrics.jsonl"))).trim().split("\n")
        .map((l) => JSON.parse(l)).filter((x) => x.type === "train");
      const lastRec = recs[recs.length - 1];
      // Counts are cumulative over passes (the loader reads ahead).
      assert.ok(lastRec.skipped_samples["outside the folder"] >= 1, JSON.stringify(lastRec));
      assert.ok(lastRec.skipped_samples["too long"] >= 1);
      assert.ok(progress.some((p) => / skipped [1-9]\d*/.test(p)), progress.join(""));
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
});

Deno.test("rowLimit: batches are planned within one storage binding; too-long --max_length is refused", async () => {
  const { rowLimit } = await import("../src/train/supervised.ts");
  const model = {
    gpu: { limits: { maxStorageBufferBindingSize: 128 * 1024 * 1024 } },
    config: {
      text: { hiddenSize: 896, numAttentionHeads: 14, headDim: 64, maxPositionEmbeddings: 32768 },
    },
  } as never;
  // 128 MiB / (896 × 4 B) = 37449 tokens per binding; 8 rows → 4681 tokens each.
  assert.equal(rowLimit({ per_device_train_batch_size: 8, max_length: null }, model), 4681);
  assert.equal(rowLimit({ per_device_train_batch_size: 1, max_length: null }, model), 32768);
  assert.equal(rowLimit({ per_device_train_batch_size: 8, max_length: 2048 }, model), 4681);
  assert.throws(
    () => rowLimit({ per_device_train_batch_size: 8, max_length: 8192 }, model),
    /--max_length 8192 with --per_device_train_batch_size 8: 8 rows × 8192 tokens × 3584 bytes = 234881024 bytes exceed one storage binding \(134217728 bytes\); use --max_length <= 4681/,
  );
  assert.throws(
    () => rowLimit({ per_device_train_batch_size: 1, max_length: 40000 }, model),
    /the model takes at most 32768 positions/,
  );
});

Deno.test({
  name: "a non-finite eval loss is an error naming the step, not 'n/a' in the card",
  ...GPU_TEST,
  fn: async () => {
    const { EvalLossCallback } = await import("../src/train/callbacks.ts");
    const { gpu } = await import("./util.ts");
    const { Tensor } = await import("../src/tensor/mod.ts");
    const g = await gpu();
    let given = 0;
    const source = () => ({
      next: () => Promise.resolve(given++ === 0 ? { batch: 2, numLossTokens: 3 } : undefined),
      state: () => null,
      restore: () => Promise.resolve(),
      report: () => "",
      close: () => Promise.resolve(),
    });
    const loss = {
      statNames: [],
      lossOf: () => ({ loss: Tensor.from(g, [NaN], [], "f32") }),
    };
    const cb = new EvalLossCallback(source as never, loss as never);
    const view = {
      model: { gpu: g, eval() {}, train() {} },
      metrics: { log() {} },
      say() {},
    } as never;
    await assert.rejects(
      cb.evaluate(view, 3),
      /eval loss at step 3 is NaN over 2 samples \(3 answer tokens\): the weights or the held-out data produce NaN\/Inf/,
    );
  },
});

Deno.test({
  name: "a checkpoint with non-finite trainable weights is never saved",
  ...GPU_TEST,
  fn: async () => {
    const { saveTrainingCheckpoint } = await import("../src/train/checkpoint.ts");
    const { gpu } = await import("./util.ts");
    const { Tensor } = await import("../src/tensor/mod.ts");
    const g = await gpu();
    const dir = await tmp();
    const w = Tensor.from(g, [1, Infinity, 3], [3], "f32");
    const parts = { trainable: [["projector.proj.weight", w]] } as never;
    await assert.rejects(
      saveTrainingCheckpoint(dir, parts, { global_step: 7 } as never),
      /refusing to save checkpoint-7 in .*: the trainable weights hold 1 non-finite/,
    );
    assert.deepEqual([...Deno.readDirSync(dir)], [], "nothing written");
    w.dispose();
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test({
  name: "a failing optional extra (--save_pytorch_bin) never removes the final model",
  ...GPU_TEST,
  fn: async () => {
    const { writeFinalModel } = await import("../src/train/export.ts");
    const root = await tmp();
    try {
      const m = await prepareDemoModels(join(root, "models"), TINY);
      const r = await trainFromArgv(argv(m, join(root, "out"), ["--max_steps", "1"]), {
        log: quiet,
        progress: { write: quiet, isTTY: false },
        keepModel: true,
      });
      const dir = join(root, "export");
      // A directory where pytorch_model.bin would go makes the .bin extra fail.
      await Deno.mkdir(join(dir, "pytorch_model.bin"), { recursive: true });
      await Deno.writeTextFile(join(dir, "pytorch_model.bin", "keep"), "x");
      const info = JSON.parse(await Deno.readTextFile(join(r.stageDir, "training_args.json")));
      const exp = await writeFinalModel(r.model!, r.processor!, dir, {
        visionId: info.vision_model_name_or_path,
        textId: info.text_model_name_or_path,
        plan: { stage: 1, llm: "frozen" } as never,
        globalStep: 1,
        learningRate: 1e-3,
        batchSize: 4,
        gradientAccumulation: 1,
        dataset: "shapes",
        numTrainable: 1,
        numTotal: 1,
        precision: "f32",
        genMaxNewTokens: 4,
        tokenizerFrom: r.stageDir,
      }, { pytorchBin: true });
      assert.equal(exp.warnings.length, 1, exp.warnings.join("\n"));
      assert.match(exp.warnings[0], /--save_pytorch_bin failed \(the final model is complete\)/);
      for (
        const f of ["config.json", "model.safetensors", "tokenizer.json", "vision/config.json"]
      ) {
        assert.ok(Deno.statSync(join(dir, f)).isFile, f);
      }
      r.model!.dispose();
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
});
