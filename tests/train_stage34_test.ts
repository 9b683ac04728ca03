// Stages 3 and 4 at CI scale, through cli/train.ts's code path, on tiny random models: flags that
// contradict fail before any weight is read; the adapters-off reference gives the base model's
// log-probs exactly; stage 3 (CoT SFT) → DPO → GRPO runs where the metrics move the right way;
// a run killed after a checkpoint and resumed repeats the uninterrupted run's steps exactly,
// for each of the three.

import assert from "node:assert/strict";
import { join } from "node:path";
import { trainFromArgv } from "../cli/train.ts";
import { DEMO_CONFIG, type DemoConfig, prepareDemoModels } from "../src/demo/demo.ts";
import { finalizeArgs, parseTrainArgs } from "../src/train/args.ts";
import { ShapesPreferenceDataset } from "../src/data/datasets/preference.ts";
import { openSiqvl } from "../src/models/factory.ts";
import { PairSource, rowLogProbs } from "../src/train/preference_stage.ts";
import type { RunResult } from "../src/train/trainer.ts";
import { writeMetricPlots } from "../src/train/metric_plot.ts";
import { loadRewardFunctions } from "../src/train/rewards.ts";
import { rollout } from "../src/train/grpo_stage.ts";
import { generateCotShapesSample } from "../src/data/datasets/cot_shapes.ts";
import { preprocessRgb } from "../src/data/image_processor.ts";
import { noGrad, Tensor } from "../src/tensor/mod.ts";
import { Gpu } from "../src/gpu/device.ts";
import { GPU_TEST, rand } from "./util.ts";

const TINY: DemoConfig = {
  ...DEMO_CONFIG,
  imageSize: 32,
  vision: { patchSize: 8, hidden: 32, layers: 1, heads: 2, intermediate: 64 },
  text: { hidden: 64, layers: 1, heads: 4, kvHeads: 2, intermediate: 128 },
};

const root = Deno.makeTempDirSync({ prefix: "siqvl-s34-" });
const quiet = () => {};
let models: { vision: string; text: string } | null = null;
const tinyModels = async () => (models ??= await prepareDemoModels(join(root, "models"), TINY));

const train = (argv: string[], extra: Parameters<typeof trainFromArgv>[1] = {}) =>
  trainFromArgv(argv, { log: quiet, progress: { write: quiet, isTTY: false }, ...extra });

function base(out: string, m: { vision: string; text: string }): string[] {
  return [
    "--vision_model_name_or_path",
    m.vision,
    "--text_model_name_or_path",
    m.text,
    "--output_dir",
    out,
    "--gradient_accumulation_steps",
    "1",
    "--no_bf16",
    "--logging_steps",
    "1",
    "--max_eval_samples",
    "0",
    "--gen_samples",
    "0",
    "--dataloader_num_workers",
    "0",
    "--no_gradient_checkpointing",
  ];
}

Deno.test("stage 3/4 flags: contradictions name the flag", () => {
  const bad: [string[], RegExp][] = [
    [["--stage", "4"], /--stage 4 needs --po_loss .* or --rl grpo/],
    [["--stage", "4", "--po_loss", "sigmoid", "--rl", "grpo"], /pick one/],
    [
      ["--stage", "4", "--po_loss", "sigmoid", "--data_path", "shapes_cot"],
      /--po_loss sigmoid needs preference data/,
    ],
    [
      ["--stage", "4", "--rl", "grpo", "--data_path", "shapes_preference"],
      /--rl grpo needs data with answers/,
    ],
    [["--stage", "3", "--data_path", "shapes_preference"], /--stage 3 needs data with answers/],
    [["--stage", "2", "--po_loss", "ipo"], /--po_loss needs --stage 4/],
    [
      ["--stage", "4", "--po_loss", "ipo", "--num_generations", "4"],
      /--num_generations needs --stage 4 --rl grpo/,
    ],
    [
      ["--stage", "4", "--rl", "grpo", "--data_path", "shapes_cot", "--label_smoothing", "0.1"],
      /--label_smoothing needs --stage 4 --po_loss/,
    ],
    [[
      "--stage",
      "4",
      "--po_loss",
      "simpo",
      "--data_path",
      "shapes_preference",
      "--precompute_ref_log_probs",
    ], /no effect .*reference-free/],
    [[
      "--stage",
      "4",
      "--rl",
      "grpo",
      "--data_path",
      "shapes_cot",
      "--per_device_train_batch_size",
      "6",
      "--num_generations",
      "4",
    ], /multiple of --num_generations/],
    [["--stage", "2", "--reasoning_format", "plain"], /--reasoning_format needs --stage 3 or 4/],
    [["--stage", "3", "--stage_3_checkpoint_path", "x"], /is for --stage 4/],
    [["--stage", "4", "--po_loss", "what"], /--po_loss: must be one of/],
  ];
  for (const [argv, re] of bad) {
    assert.throws(
      () => {
        const p = parseTrainArgs(argv);
        finalizeArgs(p.args, p.explicit);
      },
      re,
      argv.join(" "),
    );
  }
  const ok = parseTrainArgs(["--stage", "4", "--rl", "grpo", "--data_path", "shapes_cot"]);
  const a = finalizeArgs(ok.args, ok.explicit);
  assert.equal(a.beta, 0); // GRPO: no KL term by default, as TRL
  assert.equal(a.learning_rate, 1e-6);
  const d = parseTrainArgs([
    "--stage",
    "4",
    "--po_loss",
    "sigmoid",
    "--data_path",
    "shapes_preference",
  ]);
  assert.equal(finalizeArgs(d.args, d.explicit).beta, 0.1);
  const s3 = parseTrainArgs(["--stage", "3", "--data_path", "shapes_cot"]);
  assert.equal(finalizeArgs(s3.args, s3.explicit).learning_rate, 1e-5);
});

Deno.test(
  "stage 4: a record file without chosen/rejected fails before the weights load",
  GPU_TEST,
  async () => {
    const m = await tinyModels();
    const f = join(root, "no_pairs.jsonl");
    await Deno.writeTextFile(
      f,
      JSON.stringify({ image: "x.png", question: "q", answer: "a" }) + "\n",
    );
    await assert.rejects(
      () =>
        train([
          ...base(join(root, "bad"), m),
          "--stage",
          "4",
          "--po_loss",
          "sigmoid",
          "--data_path",
          f,
          "--stage_3_checkpoint_path",
          join(root, "does-not-exist"), // never reached: the data is checked first
        ]),
      /no chosen column .*--chosen_column/,
    );
  },
);

Deno.test(
  "adapters-off reference equals the base model's log-probs exactly",
  GPU_TEST,
  async () => {
    const m = await tinyModels();
    const gpu = await Gpu.get();
    const b = await openSiqvl(gpu, {
      vision: m.vision,
      text: m.text,
      seed: 3,
      projector: { factor: 2 },
    });
    const { model, processor } = b;
    const src = new PairSource(
      new ShapesPreferenceDataset({ seed: 1, imageSize: 32, length: 3 }),
      processor,
      3,
      undefined,
      1,
    );
    const batch = (await src.next())!;
    const baseLp = await noGrad(() => rowLogProbs(model, batch)).read();
    model.text.attachLora({ r: 4, alpha: 8, dropout: 0 });
    model.text.initialize(gpu, 5);
    for (const [, l] of model.text.loraLinears()) {
      const B = l.lora!.B;
      B.set(Tensor.from(gpu, rand(B.value.size, 9, 0.05, 0.3), B.value.shape));
    }
    model.eval();
    const on = await noGrad(() => rowLogProbs(model, batch)).read();
    assert.ok(
      on.some((v, i) => Math.abs(v - baseLp[i]) > 1e-3),
      "the adapters change the log-probs",
    );
    model.text.setLoraEnabled(false);
    const off = await noGrad(() => rowLogProbs(model, batch)).read();
    model.text.setLoraEnabled(true);
    assert.deepEqual(Array.from(off), Array.from(baseLp));
    await src.close();
    b.dispose();
  },
);

/** Per-step values of a metric in a run's train records. */
const series = (r: RunResult, key: string) =>
  r.metrics.filter((x) => x.type === "train").map((x) => x[key] as number);
const mean = (x: number[]) => x.reduce((s, v) => s + v, 0) / x.length;

/** Run `argv` for `steps` steps; again killed after `kill` steps and resumed: same steps. */
async function checkResume(name: string, argv: string[], steps: number, kill: number) {
  const full = await train([...argv, "--run_name", `${name}-full`, "--max_steps", String(steps)]);
  assert.equal(full.status, "completed");
  const killed = await train(
    [...argv, "--run_name", `${name}-killed`, "--max_steps", String(steps)],
    { killAfterSteps: kill },
  );
  assert.equal(killed.status, "killed");
  const resumed = await train([
    ...argv,
    "--run_name",
    `${name}-killed`,
    "--max_steps",
    String(steps),
    "--resume_from_checkpoint",
    killed.runDir,
  ]);
  assert.equal(resumed.status, "completed");
  const a = full.steps.map((s) => s.loss), b = resumed.steps.map((s) => s.loss);
  assert.deepEqual(b, a.slice(a.length - b.length), `${name}: resumed losses differ: ${a} vs ${b}`);
  return full;
}

Deno.test(
  "stage 3 → DPO → GRPO on tiny models: metrics move, kill + resume exact",
  GPU_TEST,
  async () => {
    const m = await tinyModels();
    const out = join(root, "runs");
    const common = base(out, m);
    // a stage-2 model to start from (stage 1 then stage 2, a few steps each)
    for (const st of ["1", "2"]) {
      const r = await train([
        ...common,
        "--stage",
        st,
        // (LoRA dropout 0: dropout streams are numbered per process, and these runs share one)
        ...(st === "2"
          ? ["--use_lora", "--lora_r", "4", "--lora_alpha", "8", "--lora_dropout", "0"]
          : []),
        "--data_path",
        "shapes:32",
        "--per_device_train_batch_size",
        "4",
        "--max_steps",
        "2",
        "--learning_rate",
        "1e-2",
        "--save_steps",
        "100",
      ]);
      assert.equal(r.status, "completed");
    }
    const s3args = [
      ...common,
      "--stage",
      "3",
      "--use_lora",
      "--data_path",
      "shapes_cot:32",
      "--per_device_train_batch_size",
      "4",
      "--learning_rate",
      "1e-2",
      "--save_steps",
      "2",
    ];
    const s3 = await checkResume("s3", s3args, 10, 3);
    const l = s3.steps.map((s) => s.loss);
    assert.ok(mean(l.slice(-3)) < mean(l.slice(0, 3)) * 0.9, `stage-3 loss did not fall: ${l}`);

    const dpoArgs = [
      ...common,
      "--stage",
      "4",
      "--use_lora",
      "--lora_dropout",
      "0",
      "--po_loss",
      "sigmoid",
      "--data_path",
      "shapes_preference:32",
      "--stage_3_checkpoint_path",
      s3.finalDir!,
      "--per_device_train_batch_size",
      "4",
      "--learning_rate",
      "1e-2",
      "--save_steps",
      "2",
    ];
    const dpo = await checkResume("dpo", dpoArgs, 8, 3);
    const margins = series(dpo, "rewards/margins");
    assert.equal(margins.length, 8);
    assert.ok(Math.abs(margins[0]) < 1e-6, `policy = reference at step 1: margin ${margins[0]}`);
    assert.ok(mean(margins.slice(-3)) > 0, `DPO margins did not grow: ${margins}`);
    for (
      const k of [
        "rewards/chosen",
        "rewards/rejected",
        "rewards/accuracies",
        "logps/chosen",
        "logps/rejected",
      ]
    ) {
      assert.ok(series(dpo, k).every(Number.isFinite), k);
    }

    // full fine-tuning: the reference precomputed once, carried by the checkpoints
    const lines: string[] = [];
    const full = [
      ...common,
      "--stage",
      "4",
      "--po_loss",
      "ipo",
      "--precompute_ref_log_probs",
      "--data_path",
      "shapes_preference:32",
      "--max_samples",
      "16",
      "--stage_3_checkpoint_path",
      s3.finalDir!,
      "--per_device_train_batch_size",
      "4",
      "--learning_rate",
      "1e-3",
      "--save_steps",
      "2",
      "--max_steps",
      "4",
    ];
    const pre = await train([...full, "--run_name", "pre"], { log: (l) => lines.push(l) });
    const killedPre = await train([...full, "--run_name", "pre-k"], { killAfterSteps: 3 });
    const resumedPre = await train(
      [...full, "--run_name", "pre-k", "--resume_from_checkpoint", killedPre.runDir],
      { log: (l) => lines.push(l) },
    );
    assert.equal(
      lines.filter((l) => /precomputed reference log-probs of 16 pairs/.test(l)).length,
      1,
    );
    assert.deepEqual(resumedPre.steps.map((x) => x.loss), pre.steps.slice(2).map((x) => x.loss));

    const plots = await writeMetricPlots(dpo.stageDir);
    assert.deepEqual(plots.map((p) => p.replace(/^.*\//, "")), [
      "rewards.svg",
      "accuracies.svg",
      "logps.svg",
    ]);
    assert.match(Deno.readTextFileSync(plots[0]), /<svg[\s\S]*rewards\/margins/);

    // GRPO with a user reward module a tiny model can move: shorter completions score higher
    const reward = join(root, "short.ts");
    await Deno.writeTextFile(
      reward,
      "export function reward(c: string[]): number[] { return c.map((x) => -x.length / 20); }\n",
    );
    const grpoArgs = [
      ...common,
      "--stage",
      "4",
      "--use_lora",
      "--lora_dropout",
      "0",
      "--rl",
      "grpo",
      "--reward_funcs",
      reward,
      "--data_path",
      "shapes_cot:32",
      "--stage_3_checkpoint_path",
      dpo.finalDir!,
      "--per_device_train_batch_size",
      "8",
      "--num_generations",
      "4",
      "--max_completion_length",
      "12",
      "--beta",
      "0.02",
      "--learning_rate",
      "2e-2",
      "--save_steps",
      "2",
    ];
    const grpo = await checkResume("grpo", grpoArgs, 8, 3);
    const rw = series(grpo, "reward");
    assert.ok(series(grpo, "kl").every((k) => k >= 0), "k3 KL ≥ 0");
    assert.ok(series(grpo, "rewards/short/mean").length === 8);
    assert.ok(rw.every(Number.isFinite));
    // the policy improved on fixed prompts (same samples drawn before and after: seeded)
    const [short] = await loadRewardFunctions([reward]);
    const gpu = await Gpu.get();
    const prompts = Array.from(
      { length: 8 },
      (_, i) => generateCotShapesSample(99, i, 32, "think"),
    );
    const meanReward = async (dir: string) => {
      const b = await openSiqvl(gpu, { checkpoint: dir });
      try {
        const images = prompts.map((p) => preprocessRgb(p.image, b.processor.image));
        const r = await rollout(
          b.model,
          b.processor,
          prompts,
          images,
          {
            numGenerations: 8,
            temperature: 1,
            topP: 1,
            maxCompletionLength: 12,
          },
          [short],
          null,
          "think",
          7,
        );
        return mean(r.total);
      } finally {
        b.dispose();
      }
    };
    const before = await meanReward(dpo.finalDir!), after = await meanReward(grpo.finalDir!);
    assert.ok(after > before, `GRPO reward on fixed prompts did not rise: ${before} -> ${after}`);
  },
);
