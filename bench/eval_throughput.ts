// Evaluation throughput: questions/s and generated tokens/s of a task at several batch sizes
// (one generate() call per batch: padded prompts in one KV cache, rows stopping on their own
// EOS), on the demo's trained model by default.
//
//   deno run -A --unstable-webgpu bench/eval_throughput.ts [--checkpoint DIR] [--task shapes]
//       [--limit 128] [--batch_sizes 1,8]
//
// Each batch size runs the task once untimed first (shader compilation, buffer pools), then
// timed. The accuracy column is there to show that batching does not change the answers.

import { parseArgs } from "node:util";
import { join } from "node:path";
import { announce } from "../src/gpu/announce.ts";
import { ImagePool } from "../src/data/image_pool.ts";
import { openSiqvl } from "../src/models/factory.ts";
import { runTask } from "../src/eval/runner.ts";
import { loadTask } from "../src/eval/task.ts";

/** The newest demo stage-2 model under out/demo/runs, if any. */
function demoModel(): string | undefined {
  const runs = join("out", "demo", "runs");
  try {
    const dirs = [...Deno.readDirSync(runs)].filter((e) =>
      e.isDirectory && e.name.includes("stage2")
    )
      .map((e) => e.name).sort();
    return dirs.length ? join(runs, dirs[dirs.length - 1], "stage2") : undefined;
  } catch {
    return undefined;
  }
}

const { values: v } = parseArgs({
  args: Deno.args,
  options: {
    checkpoint: { type: "string" },
    task: { type: "string", default: "shapes" },
    limit: { type: "string", default: "128" },
    batch_sizes: { type: "string", default: "1,8" },
    workers: { type: "string" },
  },
});
const checkpoint = v.checkpoint ?? demoModel();
if (!checkpoint) {
  console.error(
    "error: no --checkpoint and no demo model under out/demo/runs (run deno task demo)",
  );
  Deno.exit(1);
}
const limit = Number(v.limit);
const sizes = v.batch_sizes!.split(",").map(Number);
const gpu = await announce();
const bundle = await openSiqvl(gpu, { checkpoint });
const task = await loadTask(v.task!);
const pool = new ImagePool(v.workers === undefined ? {} : { workers: Number(v.workers) });
const metric = task.metrics[0].name;
console.log(`\n${task.spec.task} (${limit} questions at most) on ${checkpoint}\n`);
console.log(`| batch | questions | seconds | questions/s | tokens/s | ${metric} |`);
console.log("|---:|---:|---:|---:|---:|---:|");
try {
  for (const bs of sizes) {
    await runTask(bundle, task, { pool, batchSize: bs, limit: Math.min(limit, bs * 2) });
    const { result: r } = await runTask(bundle, task, { pool, batchSize: bs, limit });
    console.log(
      `| ${bs} | ${r.n} | ${r.seconds.toFixed(2)} | ${r.questions_per_second.toFixed(2)} | ` +
        `${r.tokens_per_second.toFixed(1)} | ${r.metrics[metric].toFixed(4)} |`,
    );
  }
} finally {
  pool.close();
  bundle.dispose();
}
