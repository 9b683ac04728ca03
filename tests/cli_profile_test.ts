// `--profile` on cli/train.ts, cli/generate.ts and cli/eval.ts (tables printed at the end, JSON
// written, results unchanged) and `--activation_budget_mb` on cli/train.ts (gradient checkpointing
// chosen by memory), on tiny generated models; bad values fail before any weights load.

import assert from "node:assert/strict";
import { join } from "node:path";
import { Image } from "imagescript";
import { trainFromArgv } from "../cli/train.ts";
import { main as generateMain } from "../cli/generate.ts";
import { main as evalMain } from "../cli/eval.ts";
import { finalizeArgs, parseTrainArgs, trainHelp } from "../src/train/args.ts";
import { DEMO_CONFIG, type DemoConfig, prepareDemoModels } from "../src/demo/demo.ts";
import type { RunResult } from "../src/train/trainer.ts";
import type { TrainProfile } from "../src/train/profile_window.ts";
import type { ProfileReport } from "../src/gpu/profile.ts";
import { GPU_TEST } from "./util.ts";

// Two decoder blocks, so that checkpointing has more than one block per forward.
const TINY: DemoConfig = {
  ...DEMO_CONFIG,
  imageSize: 32,
  vision: { patchSize: 8, hidden: 32, layers: 1, heads: 2, intermediate: 64 },
  text: { hidden: 64, layers: 2, heads: 4, kvHeads: 2, intermediate: 128 },
};
const BLOCKS = TINY.text.layers;
const ACCUM = 2;

const root = Deno.makeTempDirSync({ prefix: "siqvl-profile-" });
let models: { vision: string; text: string } | null = null;
const tinyModels = async () => models ??= await prepareDemoModels(join(root, "models"), TINY);
const ROOT = new URL("../", import.meta.url).pathname;

function trainArgv(m: { vision: string; text: string }, out: string, extra: string[]): string[] {
  return [
    "--stage",
    "1",
    "--data_path",
    "shapes:32",
    "--vision_model_name_or_path",
    m.vision,
    "--text_model_name_or_path",
    m.text,
    "--output_dir",
    out,
    "--per_device_train_batch_size",
    "4",
    "--gradient_accumulation_steps",
    String(ACCUM),
    "--no_bf16",
    "--max_steps",
    "4",
    "--learning_rate",
    "1e-2",
    "--logging_steps",
    "1",
    "--eval_steps",
    "2",
    "--max_eval_samples",
    "4",
    "--gen_samples",
    "0",
    "--dataloader_num_workers",
    "1",
    ...extra,
  ];
}

async function train(extra: string[]): Promise<{ res: RunResult; log: string }> {
  const lines: string[] = [];
  const res = await trainFromArgv(trainArgv(await tinyModels(), join(root, "runs"), extra), {
    log: (s) => lines.push(s),
    progress: { write: (s) => void lines.push(s), isTTY: false },
  });
  assert.equal(res.status, "completed");
  return { res, log: lines.join("\n") };
}

const losses = (r: RunResult) => r.steps.map((s) => s.loss);

/** The table headed `| title |` in `text`, as row name → count. */
function tableRows(text: string, title: string): Map<string, number> {
  const lines = text.split("\n");
  const at = lines.findIndex((l) => l.startsWith(`| ${title} | count |`));
  assert.ok(at >= 0, `no "${title}" table in:\n${text}`);
  const rows = new Map<string, number>();
  for (const l of lines.slice(at + 2)) {
    const m = /^\| (.+?) \| (\d+) \|/.exec(l);
    if (!m) break;
    rows.set(m[1], Number(m[2]));
  }
  return rows;
}

/** Checks common to every report: families, counts, shares. */
function checkReport(r: ProfileReport): void {
  const fam = new Set(r.families.map((f) => f.name));
  for (const f of ["matmul", "attention", "nn", "readback"]) assert.ok(fam.has(f), `family ${f}`);
  assert.ok(r.dispatches > 0 && r.gpuMs > 0 && r.peakRssBytes > 0, JSON.stringify(r).slice(0, 300));
  const kernelCount = r.families.filter((f) => !["readback", "upload"].includes(f.name))
    .reduce((s, f) => s + f.count, 0);
  assert.equal(kernelCount, r.dispatches + r.copies);
  const share = r.families.reduce((s, f) => s + f.share, 0);
  assert.ok(Math.abs(share - 1) < 1e-9, `shares sum to ${share}`);
}

let profiled: RunResult | null = null;

Deno.test(
  "train --profile: tables and profile.json of steps 2-3, losses unchanged",
  GPU_TEST,
  async () => {
    // Budget 0: every block recomputes, so the recompute parts are in the profile.
    const plain = await train(["--activation_budget_mb", "0"]);
    const prof = await train(["--activation_budget_mb", "0", "--profile", "--profile_steps", "2"]);
    profiled = prof.res;
    // Profiling changes how the work is submitted, not what it computes.
    assert.deepEqual(losses(prof.res), losses(plain.res));
    assert.equal(plain.res.profile, undefined);
    assert.ok(!plain.log.includes("| family |"));

    const log = prof.log;
    const file = join(prof.res.stageDir, "profile.json");
    assert.equal(prof.res.profilePath, file);
    assert.ok(log.includes(`[siqvl] profile of steps 2-3, written to ${file}`), log);
    const families = tableRows(log, "family");
    assert.ok((families.get("matmul") ?? 0) > 0, [...families.keys()].join());
    const parts = tableRows(log, "part");
    for (
      const p of [
        "vision",
        "projector",
        "llm.embed",
        "llm.attention",
        "llm.mlp",
        "llm.norm",
        "loss",
        "backward:llm.attention",
        "backward:llm.mlp",
        "backward:loss",
        "recompute:llm.attention",
        "optimizer",
      ]
    ) assert.ok(parts.has(p), `part ${p} not in ${[...parts.keys()]}`);
    tableRows(log, "kernel");
    // The profile is printed after the run's last lines.
    assert.ok(log.indexOf("[siqvl] profile of") > log.indexOf("[siqvl] samples skipped"));

    const json = JSON.parse(Deno.readTextFileSync(file)) as TrainProfile;
    assert.deepEqual(json.steps, [2, 3]);
    checkReport(json);
    assert.deepEqual(json.families.map((f) => f.name), [...families.keys()].slice(0, 30));
    assert.equal(json.timing, prof.res.profile!.timing);
    // One metric readback per logged step; the eval loss at step 2 ran with the profile paused.
    assert.equal(json.readbacks, 2);
    assert.ok(json.pausedMs > 0);
    assert.ok(json.parts.some((p) => p.name === "optimizer" && p.count > 0));
  },
);

Deno.test(
  "train --activation_budget_mb: blocks keep activations within the budget",
  GPU_TEST,
  async () => {
    const none = await train(["--activation_budget_mb", "0"]);
    const all = await train(["--activation_budget_mb", "1024"]);
    const forwards = BLOCKS * ACCUM; // checkpointed block forwards in one step
    assert.deepEqual(none.res.checkpointing, { kept: 0, recomputed: forwards });
    assert.deepEqual(all.res.checkpointing, { kept: forwards, recomputed: 0 });
    assert.match(none.log, /gradient checkpointing: every block recomputes in backward/);
    assert.match(
      all.log,
      /blocks keep activations within 1024 MiB[\s\S]*step 1: 4 of 4 block forwards kept their activations/,
    );
    // Keeping or recomputing gives the same gradients, so the same losses.
    assert.deepEqual(losses(all.res), losses(none.res));
    // The default budget (DEFAULT_ACTIVATION_BUDGET_MB) holds every block of this tiny model.
    const byDefault = await train([]);
    assert.deepEqual(byDefault.res.checkpointing, { kept: forwards, recomputed: 0 });
    assert.match(byDefault.log, /blocks keep activations within 1024 MiB/);
    const off = await train(["--no_gradient_checkpointing"]);
    assert.equal(off.res.checkpointing, undefined);
    assert.match(off.log, /gradient checkpointing: off/);
  },
);

async function png(): Promise<string> {
  const img = new Image(32, 32);
  img.fill(0xff2020ff);
  const p = join(root, "red.png");
  await Deno.writeFile(p, await img.encode());
  return p;
}

Deno.test(
  "generate --profile: prefill and decode sections, JSON, the same answer",
  GPU_TEST,
  async () => {
    assert.ok(profiled?.finalDir, "needs the profiled training run");
    const image = await png();
    const base = [
      "--checkpoint",
      profiled.finalDir,
      "--image",
      image,
      "--no_sample",
      "--max_new_tokens",
      "5",
    ];
    const quiet = () => {};
    const want = await generateMain(base, quiet);
    const file = join(root, "gen-profile.json");
    let text = "";
    const got = await generateMain([...base, "--profile", "--profile_out", file], (s) => text += s);
    assert.equal(got, want);
    assert.ok(text.includes(`[generate] profile, written to ${file}`), text);
    const sections = tableRows(text, "section");
    assert.deepEqual([...sections.keys()].sort(), ["decode", "prefill"]);
    const parts = tableRows(text, "part");
    for (const p of ["vision", "projector", "llm.attention", "llm.mlp", "llm.head"]) {
      assert.ok(parts.has(p), `part ${p} not in ${[...parts.keys()]}`);
    }
    const json = JSON.parse(Deno.readTextFileSync(file)) as ProfileReport;
    checkReport(json);
    assert.ok(json.readbacks >= 1);
  },
);

Deno.test(
  "eval --profile: profile.json in the output folder, the same scores",
  GPU_TEST,
  async () => {
    assert.ok(profiled?.finalDir, "needs the profiled training run");
    const base = ["--checkpoint", profiled.finalDir, "--tasks", "shapes", "--limit", "4"];
    const quiet = () => {};
    const plainDir = join(root, "eval-plain"), profDir = join(root, "eval-prof");
    const want = await evalMain(
      [...base, "--output_dir", plainDir, "--max_new_tokens", "4"],
      quiet,
    );
    const lines: string[] = [];
    const got = await evalMain(
      [...base, "--output_dir", profDir, "--max_new_tokens", "4", "--profile"],
      (s) => lines.push(s),
    );
    const samples = (d: string) => Deno.readTextFileSync(join(d, "samples_shapes.jsonl"));
    assert.equal(samples(profDir), samples(plainDir));
    assert.deepEqual(got!.tasks[0].metrics, want!.tasks[0].metrics);
    const text = lines.join("\n");
    const file = join(profDir, "profile.json");
    assert.ok(text.includes(`[eval] profile of 1 task(s), written to ${file}`), text);
    assert.ok(tableRows(text, "part").has("vision"));
    checkReport(JSON.parse(Deno.readTextFileSync(file)));
  },
);

Deno.test("--help lists the new flags", async () => {
  const help = trainHelp();
  for (const f of ["--profile", "--profile_steps <n> (default 3)", "--activation_budget_mb <n>"]) {
    assert.ok(help.includes(`  ${f}`), f);
  }
  for (const main of [generateMain, evalMain]) {
    let text = "";
    await main(["--help"], (s) => text += s);
    assert.match(text, /--profile\s/);
    assert.match(text, /--profile_out FILE/);
  }
});

/** Run a CLI in its own process. */
async function cli(script: string, args: string[]) {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--unstable-webgpu", `${ROOT}cli/${script}`, ...args],
    env: { NO_COLOR: "1", XDG_RUNTIME_DIR: "/tmp" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: r.code, out: dec.decode(r.stdout), err: dec.decode(r.stderr) };
}

Deno.test("bad --profile / --activation_budget_mb values fail before loading weights", async () => {
  const parse = (argv: string[]) => {
    const p = parseTrainArgs(argv, {});
    return finalizeArgs(p.args, p.explicit);
  };
  assert.throws(
    () => parse(["--activation_budget_mb", "-1"]),
    /--activation_budget_mb: must be >= 0/,
  );
  assert.throws(
    () => parse(["--activation_budget_mb", "lots"]),
    /--activation_budget_mb: expected a number/,
  );
  assert.throws(
    () => parse(["--profile", "--profile_steps", "0"]),
    /--profile_steps: must be >= 1/,
  );
  assert.throws(
    () => parse(["--profile_steps", "2"]),
    /--profile_steps has no effect without --profile/,
  );
  assert.throws(
    () => parse(["--activation_budget_mb", "64", "--no_gradient_checkpointing"]),
    /--activation_budget_mb .*--no_gradient_checkpointing/,
  );
  assert.equal(parse(["--activation_budget_mb", "64"]).activation_budget_mb, 64);
  assert.equal(parse([]).activation_budget_mb, null);
  assert.equal(parse(["--profile"]).profile_steps, 3);
  // The CLI stops at the flag: the missing model folders are never opened.
  const missing = [
    "--vision_model_name_or_path",
    "/nonexistent/v",
    "--text_model_name_or_path",
    "/nonexistent/t",
  ];
  for (
    const [argv, want] of [
      [["--activation_budget_mb", "-5"], /^error: --activation_budget_mb: must be >= 0/],
      [["--profile", "--profile_steps", "0"], /^error: --profile_steps: must be >= 1/],
    ] as const
  ) {
    const r = await cli("train.ts", [...argv, ...missing]);
    assert.equal(r.code, 1, r.out + r.err);
    assert.match(r.err, want);
    assert.ok(!r.err.includes("nonexistent"), r.err);
  }
  const quiet = () => {};
  const gen = ["--checkpoint", "/nonexistent/ckpt", "--image", "/nonexistent/x.png"];
  await assert.rejects(
    generateMain([...gen, "--profile_out", "p.json"], quiet),
    /--profile_out has no effect without --profile/,
  );
  await assert.rejects(
    generateMain([...gen, "--profile", "--profile_out="], quiet),
    /--profile_out needs a file name/,
  );
  await assert.rejects(
    evalMain(
      ["--checkpoint", "/nonexistent/ckpt", "--tasks", "shapes", "--profile_out", "p.json"],
      quiet,
    ),
    /--profile_out has no effect without --profile/,
  );
});
