// --eval_tasks in training: the benchmark callback logs eval records "<task>/<metric>" at
// step 0, every gen_steps and at the end (TensorBoard scalars eval/<task>/<metric>), draws
// eval.svg, and the exported model card lists the last values.

import assert from "node:assert/strict";
import { join } from "node:path";
import { DEMO_CONFIG, prepareDemoModels } from "../src/demo/demo.ts";
import { decodeEvent, readRecords } from "../src/train/tensorboard.ts";
import { trainFromArgv } from "../src/train/trainer.ts";
import { GPU_TEST } from "./util.ts";

Deno.test({
  name: "eval: --eval_tasks shapes during training → metrics, TensorBoard, plot, model card",
  ...GPU_TEST,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "siqvl-evtrain-" });
    try {
      const m = await prepareDemoModels(join(dir, "models"), DEMO_CONFIG);
      const quiet = () => {};
      const res = await trainFromArgv([
        "--stage",
        "1",
        "--data_path",
        `shapes:${DEMO_CONFIG.imageSize}`,
        "--vision_model_name_or_path",
        m.vision,
        "--text_model_name_or_path",
        m.text,
        "--output_dir",
        join(dir, "runs"),
        "--per_device_train_batch_size",
        "4",
        "--gradient_accumulation_steps",
        "1",
        "--no_bf16",
        "--pixel_shuffle_factor",
        String(DEMO_CONFIG.pixelShuffle),
        "--max_steps",
        "4",
        "--logging_steps",
        "2",
        "--eval_steps",
        "4",
        "--save_steps",
        "4",
        "--gen_steps",
        "2",
        "--gen_samples",
        "0",
        "--max_eval_samples",
        "0",
        "--dataloader_num_workers",
        "0",
        "--no_gradient_checkpointing",
        "--report_to",
        "tensorboard",
        "--eval_tasks",
        "shapes",
        "--eval_limit",
        "5",
      ], { log: quiet, progress: { write: quiet, isTTY: false } }); // deno-fmt-ignore
      const recs = (await Deno.readTextFile(res.metricsPath)).trim().split("\n").map((l) => JSON.parse(l))
        .filter((r) => r.type === "eval" && "shapes/exact_match" in r);
      assert.deepEqual(recs.map((r) => r.step), [0, 2, 4]);
      for (const r of recs) assert.ok(r["shapes/exact_match"] >= 0 && r["shapes/exact_match"] <= 1);
      const tb = await Deno.readFile(res.tensorboardPath!);
      const names = readRecords(tb).flatMap((b) => decodeEvent(b).scalars.map(([k]) => k));
      assert.ok(names.includes("eval/shapes/exact_match"), names.join(","));
      const stageDir = join(res.metricsPath, "..");
      assert.match(await Deno.readTextFile(join(stageDir, "eval.svg")), /shapes\/exact_match/);
      const card = await Deno.readTextFile(join(res.finalDir!, "README.md"));
      assert.match(card, /## Evaluation[\s\S]*\| shapes\/exact_match \| \d\.\d{4} \|/);
      res.model?.dispose();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
