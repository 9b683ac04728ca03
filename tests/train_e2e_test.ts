// End to end at CI scale, through cli/train.ts's code path: a tiny random SiQ-VL on generated
// shapes trains stage 1 then stage 2 (LoRA with dropout); the loss falls; a run killed after a
// checkpoint and resumed reproduces the uninterrupted run's losses exactly; non-finite steps are
// skipped and repeated ones stop the run at the last good checkpoint; the final directory holds
// every file, loads, and cli/generate.ts answers from it (image from a path and from a URL);
// push_to_hub uploads it to a local fake hub.

import assert from "node:assert/strict";
import { join } from "node:path";
import { Image } from "imagescript";
import { trainFromArgv } from "../cli/train.ts";
import { main as generateMain } from "../cli/generate.ts";
import { DEMO_CONFIG, type DemoConfig, prepareDemoModels } from "../src/demo/demo.ts";
import { listCheckpoints } from "../src/train/checkpoint.ts";
import { readMetrics } from "../src/train/metrics.ts";
import { decodeEvent, readRecords } from "../src/train/tensorboard.ts";
import type { RunResult } from "../src/train/trainer.ts";
import { pushToHub } from "../src/train/hub.ts";
import { GPU_TEST } from "./util.ts";

const TINY: DemoConfig = {
  ...DEMO_CONFIG,
  imageSize: 32,
  vision: { patchSize: 8, hidden: 32, layers: 1, heads: 2, intermediate: 64 },
  text: { hidden: 64, layers: 1, heads: 4, kvHeads: 2, intermediate: 128 },
};

const root = Deno.makeTempDirSync({ prefix: "siqvl-e2e-" });
let models: { vision: string; text: string } | null = null;
const quiet = () => {};

async function tinyModels() {
  if (!models) models = await prepareDemoModels(join(root, "models"), TINY);
  return models;
}

function common(
  out: string,
  m: { vision: string; text: string },
  over: Record<string, string> = {},
): string[] {
  const base = [
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
    "2",
    "--no_bf16",
    "--logging_steps",
    "1",
    "--max_eval_samples",
    "8",
    "--gen_samples",
    "2",
    "--gen_max_new_tokens",
    "3",
    "--dataloader_num_workers",
    "1",
  ];
  for (const [k, v] of Object.entries(over)) {
    const i = base.indexOf(`--${k}`);
    if (i >= 0) base[i + 1] = v;
    else base.push(`--${k}`, v);
  }
  return base;
}

const train = (argv: string[], extra: Parameters<typeof trainFromArgv>[1] = {}) =>
  trainFromArgv(argv, { log: quiet, progress: { write: quiet, isTTY: false }, ...extra });

function losses(r: RunResult): number[] {
  return r.steps.map((s) => s.loss);
}

let stage1: RunResult | null = null;

const exists = (p: string) => {
  try {
    Deno.statSync(p);
    return true;
  } catch {
    return false;
  }
};

/** Run cli/train.ts in its own process; returns exit code and output. */
async function cli(argv: string[], env: Record<string, string> = {}) {
  const script = new URL("../cli/train.ts", import.meta.url).pathname;
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--unstable-webgpu", script, ...argv],
    env: { NO_COLOR: "1", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: r.code, out: dec.decode(r.stdout) + dec.decode(r.stderr) };
}

/** Per-step train records of a stage dir's metrics.jsonl. */
function trainLosses(dir: string): { step: number; loss: number }[] {
  return readMetrics(join(dir, "metrics.jsonl")).filter((r) => r.type === "train").map((r) => ({
    step: r.step,
    loss: r.loss as number,
  }));
}
let finalDir = "";

Deno.test("e2e stage 1: projector trains, loss falls, artifacts written", GPU_TEST, async () => {
  const m = await tinyModels();
  const out = join(root, "runs");
  stage1 = await train([
    ...common(out, m),
    "--stage",
    "1",
    "--max_steps",
    "12",
    "--learning_rate",
    "1e-2",
    "--save_steps",
    "6",
    "--eval_steps",
    "6",
    "--gen_steps",
    "100",
    "--report_to",
    "tensorboard",
    "--save_pytorch_bin",
  ]);
  assert.equal(stage1.status, "completed");
  const l = losses(stage1);
  assert.equal(l.length, 12);
  const head = (l[0] + l[1] + l[2]) / 3, tail = (l[9] + l[10] + l[11]) / 3;
  assert.ok(tail < head * 0.95, `stage-1 loss did not fall: ${l.map((x) => x.toFixed(3))}`);
  assert.match(stage1.stageDir, /siq-vl_vision_text_stage1_\d{8}_\d{6}\/stage1$/);
  const files = [...Deno.readDirSync(stage1.stageDir)].map((e) => e.name);
  for (
    const f of [
      "config.json",
      "model.safetensors",
      "pytorch_model.bin",
      "tokenizer.json",
      "tokenizer_config.json",
      "chat_template.jinja",
      "processor_config.json",
      "preprocessor_config.json",
      "generation_config.json",
      "README.md",
      "loss.svg",
      "metrics.jsonl",
      "trainer_state.json",
      "checkpoint-6",
    ]
  ) assert.ok(files.includes(f), `missing ${f} in ${files}`);
  assert.ok(!files.some((f) => f.startsWith(".")), `temp files left: ${files}`);
  const cp = join(stage1.stageDir, "checkpoint-6");
  for (
    const f of [
      "trainable.safetensors",
      "optimizer.safetensors",
      "scheduler.json",
      "data_state.json",
      "rng_state.json",
      "trainer_state.json",
    ]
  ) assert.ok(Deno.statSync(join(cp, f)).isFile, f);
  const recs = readMetrics(stage1.metricsPath);
  const tr = recs.filter((r) => r.type === "train");
  assert.equal(tr.length, 12);
  for (
    const k of [
      "loss",
      "lr",
      "grad_norm",
      "tokens_per_sec",
      "samples_per_sec",
      "step_time_sec",
      "gpu_live_bytes",
      "gpu_peak_bytes",
    ]
  ) assert.equal(typeof tr[0][k], "number", k);
  assert.equal(tr[0].lr, 0); // cosine warmup starts at 0, as HF's does
  assert.ok(recs.some((r) => r.type === "eval" && r.step === 6));
  assert.ok(recs.some((r) => r.type === "gen" && r.step === 0));
  assert.match(Deno.readTextFileSync(stage1.plotPath), /<svg[\s\S]*train loss[\s\S]*eval loss/);
  const ev = readRecords(Deno.readFileSync(stage1.tensorboardPath!)).map(decodeEvent);
  assert.ok(ev.some((e) => e.scalars.some(([t]) => t === "train/loss")));
  const card = Deno.readTextFileSync(join(stage1.stageDir, "README.md"));
  assert.match(card, /pipeline_tag: image-text-to-text/);
  const proc = JSON.parse(Deno.readTextFileSync(join(stage1.stageDir, "processor_config.json")));
  assert.equal(proc.pixel_shuffle_factor, 2);
});

Deno.test("e2e stage 2 LoRA: kill + resume gives the uninterrupted losses", GPU_TEST, async () => {
  assert.ok(stage1, "stage 1 must run first");
  const m = await tinyModels();
  const out = join(root, "runs");
  const args = [
    ...common(out, m),
    "--stage",
    "2",
    "--use_lora",
    "--lora_r",
    "8",
    "--lora_alpha",
    "16",
    "--lora_dropout",
    "0.1",
    "--max_steps",
    "8",
    "--learning_rate",
    "5e-3",
    "--save_steps",
    "4",
    "--eval_steps",
    "100",
    "--gen_steps",
    "100",
  ];
  // Each run is its own `deno run cli/train.ts` process, as a user would run them; the killed
  // one ends abruptly (exit 137) after step 5, one step past its checkpoint.
  const full = await cli([...args, "--run_name", "full", "--merge_lora"]);
  assert.equal(full.code, 0, full.out);
  const fullDir = join(out, "full", "stage2");
  const fullLosses = trainLosses(fullDir);
  assert.equal(fullLosses.length, 8);
  assert.match(full.out, /stage 2 starts from the latest stage-1 result: .*stage1/);
  assert.ok(full.out.includes(stage1!.stageDir), "stage 2 must find the stage-1 run by itself");
  const l = fullLosses.map((r) => r.loss);
  assert.ok(
    (l[5] + l[6] + l[7]) / 3 < (l[0] + l[1] + l[2]) / 3,
    `stage-2 loss did not fall: ${l.map((x) => x.toFixed(3))}`,
  );
  for (const f of ["adapter_config.json", "adapter_model.safetensors", "merged/config.json"]) {
    assert.ok(Deno.statSync(join(fullDir, f)).isFile, f);
  }
  const killed = await cli([...args, "--run_name", "killed"], { SIQVL_KILL_AFTER_STEPS: "5" });
  assert.equal(killed.code, 137, killed.out);
  const killedDir = join(out, "killed", "stage2");
  assert.deepEqual(listCheckpoints(killedDir).map((c) => c.step), [4]);
  assert.ok(!exists(join(killedDir, "config.json")), "a killed run has no final model");
  assert.equal(trainLosses(killedDir).length, 5);
  const resumed = await cli([...args, "--resume_from_checkpoint", killedDir]);
  assert.equal(resumed.code, 0, resumed.out);
  assert.match(resumed.out, /resuming from .*killed\/stage2\/checkpoint-4/);
  const after = trainLosses(killedDir);
  // The killed run's log past the checkpoint was dropped; the resumed log continues it.
  assert.deepEqual(after.map((r) => r.step), [1, 2, 3, 4, 5, 6, 7, 8]);
  for (let i = 0; i < 8; i++) {
    assert.ok(
      Math.abs(after[i].loss - l[i]) <= 1e-6 * Math.abs(l[i]),
      `step ${i + 1}: loss ${after[i].loss} after kill + resume vs ${l[i]} uninterrupted`,
    );
  }
  assert.ok(exists(join(killedDir, "config.json")), "the resumed run wrote the final model");
  // A resume with different flags is refused.
  await assert.rejects(
    train([
      ...args.map((x) => (x === "5e-3" ? "1e-3" : x)),
      "--resume_from_checkpoint",
      killedDir,
    ]),
    /--learning_rate/,
  );

  // generate.ts answers from the final directory, with the image as a path and as a URL.
  const img = new Image(32, 32);
  img.fill(0xff0000ff);
  const png = new Uint8Array(await img.encode());
  const pngPath = join(root, "red.png");
  Deno.writeFileSync(pngPath, png);
  let streamed = "";
  const answer = await generateMain(
    [
      "--checkpoint",
      fullDir,
      "--image",
      pngPath,
      "--question",
      "What color is the shape?",
      "--no_sample",
      "--max_new_tokens",
      "4",
    ],
    (s) => (streamed += s),
  );
  assert.equal(typeof answer, "string");
  assert.equal(streamed.trim(), answer);
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: quiet },
    () => new Response(png, { headers: { "content-type": "image/png" } }),
  );
  try {
    const viaUrl = await generateMain(
      [
        "--checkpoint",
        join(fullDir, "merged"),
        "--image",
        `http://127.0.0.1:${server.addr.port}/red.png`,
        "--question",
        "What color is the shape?",
        "--no_sample",
        "--max_new_tokens",
        "4",
      ],
      quiet,
    );
    assert.equal(viaUrl, answer); // the merged export answers like the adapter
  } finally {
    await server.shutdown();
  }
  await assert.rejects(generateMain(["--checkpoint", fullDir], quiet), /--image is required/);
  await assert.rejects(
    generateMain(["--checkpoint", fullDir, "--image", pngPath, "--num_beams", "2"], quiet),
    /--no_sample/,
  );
  finalDir = fullDir;
});

Deno.test("e2e: repeated non-finite steps stop at the last good checkpoint", GPU_TEST, async () => {
  const m = await tinyModels();
  const out = join(root, "runs-nan");
  const r = await train([
    ...common(out, m, { gen_samples: "0" }),
    "--stage",
    "1",
    "--max_steps",
    "10",
    "--save_steps",
    "2",
    "--max_nonfinite_steps",
    "3",
  ], { faultSteps: (s) => s === 3 || s >= 5 });
  assert.equal(r.status, "stopped-nonfinite");
  assert.equal(r.finalDir, null);
  const skipped = r.steps.filter((s) => !s.finite).map((s) => s.step);
  assert.deepEqual(skipped, [3, 5, 6, 7]);
  // Step 4 recovered (checkpoint-4 is good); the save at step 6, inside the streak, is skipped.
  assert.equal(r.lastCheckpoint, join(r.stageDir, "checkpoint-4"));
  assert.deepEqual(listCheckpoints(r.stageDir).map((c) => c.step), [2, 4]);
  const events = readMetrics(r.metricsPath).filter((x) => x.type === "event");
  assert.equal(events.filter((e) => e.event === "skipped_step").length, 4);
  assert.equal(events.filter((e) => e.event === "checkpoint_skipped").length, 1);
});

// A minimal hub: whoami, repo creation, preupload (all regular files), commit, tag.
class MiniHub {
  files = new Map<string, Uint8Array>();
  tags: string[] = [];
  created: string[] = [];
  server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: quiet }, (r) => this.handle(r));
  get url() {
    return `http://127.0.0.1:${this.server.addr.port}`;
  }
  async handle(req: Request): Promise<Response> {
    const p = new URL(req.url).pathname;
    if (req.headers.get("authorization") !== "Bearer hf_test") {
      return Response.json({ error: "unauthorized" }, { status: 401 });
    }
    if (p === "/api/whoami-v2") {
      return Response.json({
        name: "me",
        type: "user",
        orgs: [],
        auth: { type: "access_token", accessToken: { role: "write", displayName: "t" } },
      });
    }
    if (p === "/api/repos/create") {
      const b = await req.json();
      this.created.push(`${b.organization ?? ""}/${b.name}`);
      return Response.json({ url: `${this.url}/${b.organization}/${b.name}` });
    }
    let m;
    if ((m = p.match(/^\/api\/models\/(.+)\/preupload\/main$/))) {
      const b = await req.json() as { files: { path: string }[] };
      return Response.json({
        files: b.files.map((f) => ({ path: f.path, uploadMode: "regular" })),
      });
    }
    if ((m = p.match(/^\/api\/models\/(.+)\/commit\/main$/))) {
      for (const line of (await req.text()).split("\n")) {
        if (!line.trim()) continue;
        const { key, value } = JSON.parse(line);
        if (key === "file") {
          this.files.set(value.path, Uint8Array.from(atob(value.content), (c) => c.charCodeAt(0)));
        }
      }
      return Response.json({
        commitOid: "a".repeat(40),
        commitUrl: `${this.url}/${m[1]}/commit/a`,
      });
    }
    if ((m = p.match(/^\/api\/models\/(.+)\/tag\/(.+)$/))) {
      this.tags.push((await req.json()).tag);
      return Response.json({});
    }
    return new Response(`not found ${p}`, { status: 404 });
  }
}

Deno.test("e2e: push_to_hub uploads the final files and tags the commit", GPU_TEST, async () => {
  assert.ok(finalDir, "stage 2 must run first");
  const hub = new MiniHub();
  try {
    const url = await pushToHub(finalDir, "siq-vl_vision_text_stage2", {
      stage: 2,
      hubUrl: hub.url,
      token: "hf_test",
      log: quiet,
    });
    assert.match(url, /me\/siq-vl_vision_text_stage2\/commit/);
    assert.deepEqual(hub.created, ["me/siq-vl_vision_text_stage2"]);
    const names = [...hub.files.keys()].sort();
    for (
      const f of ["README.md", "adapter_model.safetensors", "config.json", "model.safetensors"]
    ) {
      assert.ok(names.includes(f), `${f} not uploaded (${names})`);
    }
    assert.ok(!names.some((n) => n.startsWith("checkpoint-") || n.startsWith("merged/")));
    assert.deepEqual(hub.tags, ["stage2-step8"]);
    const local = Deno.readFileSync(join(finalDir, "config.json"));
    assert.deepEqual(hub.files.get("config.json"), local);
  } finally {
    await hub.server.shutdown();
  }
  Deno.removeSync(root, { recursive: true });
});
