// deno run -A --unstable-webgpu cli/eval.ts --checkpoint DIR|org/name --tasks a,b [flags]
// Benchmark evaluation of a SiQ-VL checkpoint on lmms-eval-style tasks (src/eval/tasks/*.json
// or task files of your own), score mode for JSONL predictions, and comparison of results.

import { intFlag, parseFlags } from "./flags.ts";
import { basename, join } from "node:path";
import { parseReasoningFormat, type ReasoningFormat } from "../src/data/reasoning.ts";
import { loadTask, shippedTasks } from "../src/eval/task.ts";
import { scoreJsonl } from "../src/eval/score.ts";
import {
  checkpointHash,
  compareMarkdown,
  type EvalResults,
  readResults,
  resultsMarkdown,
  writeResults,
} from "../src/eval/report.ts";
import type { TaskResult } from "../src/eval/runner.ts";
import { METRIC_NAMES, metricRules } from "../src/eval/metrics.ts";

const HELP = `Usage: deno task eval --checkpoint DIR|org/name --tasks a,b [flags]
       deno task eval --score FILE.jsonl --metric NAME[:RULES]
       deno task eval --compare DIR1,DIR2[,...]

Evaluates a SiQ-VL checkpoint on benchmark tasks with batched greedy generation, writing
results.json, results.md and samples_<task>.jsonl into --output_dir.

  --checkpoint DIR|org/name  model directory (a stage directory written by cli/train.ts, an
                             original SiQ-VL checkpoint) or a hub id (through the hub cache)
  --tasks a,b                shipped task names (${shippedTasks().join(", ")})
                             or paths to task .json files (format: src/eval/README.md)
  --limit N                  first N questions of each task (default: all)
  --batch_size N             prompts per generate() call (default 8)
  --output_dir DIR           default eval_results/<checkpoint name>
  --max_new_tokens N         override every task's max_new_tokens
  --reasoning_format F       final answer from reasoning output: think (after </think>),
                             llava-cot (<CONCLUSION>), plain (last line), none (default: task's)
  --workers N                image decoding workers (default: cores − 1, at most 4)
  --profile                  profile the whole evaluation (src/gpu/profile.ts): after the
                             results, tables per kernel family, model part (vision, projector,
                             llm.*) and kernel — dispatches, GPU time, bytes bound, share; the
                             scores are unchanged
  --profile_out FILE         where --profile writes its JSON (default <output_dir>/profile.json)
  --score FILE --metric M    score a JSONL of {"prediction", "answers"[, "choices", "answer"]}
                             lines without a model; ends with "<metric>: <value> (<n> samples)"
  --compare DIR1,DIR2        print the results of several output folders side by side
  --help

Metrics (NAME[:RULES], first rules = default):
${
  METRIC_NAMES.map((m) =>
    `  ${m}${metricRules(m).length ? `  [${metricRules(m).join(" | ")}]` : ""}`
  ).join("\n")
}`;

const OPTIONS = {
  checkpoint: { type: "string" },
  tasks: { type: "string" },
  limit: { type: "string" },
  batch_size: { type: "string" },
  output_dir: { type: "string" },
  max_new_tokens: { type: "string" },
  reasoning_format: { type: "string" },
  workers: { type: "string" },
  score: { type: "string" },
  metric: { type: "string" },
  compare: { type: "string" },
  profile: { type: "boolean" },
  profile_out: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

const list = (v: string) => v.split(",").map((s) => s.trim()).filter(Boolean);

/** Run the CLI; `out` receives everything printed to stdout. */
export async function main(
  argv: string[],
  out: (s: string) => void = (s) => console.log(s),
): Promise<EvalResults | undefined> {
  const v = parseFlags(argv, OPTIONS);
  if (v.help) {
    out(HELP);
    return undefined;
  }
  if (v.score !== undefined) {
    if (!v.metric) throw new Error("--score needs --metric NAME; see --help");
    let text: string;
    try {
      text = await Deno.readTextFile(v.score);
    } catch (e) {
      throw new Error(`--score ${v.score}: ${(e as Error).message}`);
    }
    const format = v.reasoning_format === undefined
      ? "none"
      : parseReasoningFormat(v.reasoning_format);
    const r = scoreJsonl(text, v.metric, v.score, format);
    for (const [k, x] of Object.entries(r.values)) {
      if (k !== r.headline) out(`${k}: ${x.toFixed(4)}`);
    }
    out(`${v.metric}: ${r.values[r.headline].toFixed(4)} (${r.n} samples)`);
    return undefined;
  }
  if (v.compare !== undefined) {
    const dirs = list(v.compare);
    if (dirs.length < 2) throw new Error("--compare needs at least two result folders (DIR1,DIR2)");
    out(compareMarkdown(dirs, await Promise.all(dirs.map(readResults))));
    return undefined;
  }
  if (!v.checkpoint) throw new Error("--checkpoint is required; see --help");
  if (!v.tasks) throw new Error("--tasks is required (e.g. --tasks shapes); see --help");
  const limit = intFlag("limit", v.limit, undefined, 1);
  const batchSize = intFlag("batch_size", v.batch_size, undefined, 1) ?? 8;
  const maxNewTokens = intFlag("max_new_tokens", v.max_new_tokens, undefined, 1);
  const workers = intFlag("workers", v.workers, undefined, 0);
  let reasoningFormat: ReasoningFormat | undefined;
  if (v.reasoning_format !== undefined) reasoningFormat = parseReasoningFormat(v.reasoning_format);
  // Every task file is read and validated before the model loads.
  const tasks: Awaited<ReturnType<typeof loadTask>>[] = [];
  for (const name of list(v.tasks)) tasks.push(await loadTask(name));
  const outDir = v.output_dir ?? join("eval_results", basename(v.checkpoint.replace(/\/+$/, "")));
  if (v.profile_out !== undefined && !v.profile) {
    throw new Error("--profile_out has no effect without --profile");
  }
  if (v.profile_out === "") throw new Error("--profile_out needs a file name");
  const profileOut = v.profile_out ?? join(outDir, "profile.json");

  const { announce } = await import("../src/gpu/announce.ts");
  const { openSiqvl, resolveModelSource } = await import("../src/models/factory.ts");
  const { ImagePool } = await import("../src/data/image_pool.ts");
  const { runTask } = await import("../src/eval/runner.ts");
  const { Progress } = await import("../src/train/progress.ts");
  const { describeProfile, ProfileSession } = await import("../src/gpu/profile_session.ts");
  const gpu = await announce();
  const local = await resolveModelSource(v.checkpoint, (s) => out(s));
  const hash = await checkpointHash(local);
  const bundle = await openSiqvl(gpu, { checkpoint: local }, { pinWeights: true });
  const pool = new ImagePool(workers === undefined ? {} : { workers });
  const results: TaskResult[] = [];
  const report: EvalResults = {
    checkpoint: v.checkpoint,
    checkpoint_hash: hash,
    created: new Date().toISOString(),
    tasks: results,
  };
  const runTasks = async () => {
    for (const task of tasks) {
      const samplesPath = join(outDir, `samples_${task.spec.task}.jsonl`);
      const sink = await Deno.open(samplesPath, { write: true, create: true, truncate: true });
      const enc = new TextEncoder();
      let bar: InstanceType<typeof Progress> | undefined;
      let correct = 0;
      try {
        const { result } = await runTask(bundle, task, {
          limit,
          batchSize,
          pool,
          reasoningFormat,
          maxNewTokens,
          onSample: (s) => {
            correct += s.score;
            sink.writeSync(enc.encode(JSON.stringify(s) + "\n"));
          },
          onProgress: (done, total) => {
            bar ??= new Progress(total, 0, { label: task.spec.task, intervalSec: 10 });
            bar.update(done, `${task.metrics[0].name} ${(correct / done).toFixed(3)}`);
          },
        });
        bar?.done();
        results.push(result);
        const main = Object.entries(result.metrics).slice(0, 3)
          .map(([k, x]) => `${k} ${x.toFixed(4)}`).join(", ");
        out(
          `[eval] ${task.spec.task}: ${main} (${result.n} questions, ${
            result.seconds.toFixed(1)
          } s, ` +
            `${result.questions_per_second.toFixed(2)} questions/s, ${
              result.tokens_per_second.toFixed(1)
            } tokens/s)`,
        );
      } finally {
        sink.close();
      }
      await writeResults(outDir, report); // after every task: a crash keeps what is done
    }
  };
  let profileText = "";
  try {
    await Deno.mkdir(outDir, { recursive: true });
    const prof = v.profile ? await ProfileSession.start(gpu, bundle.model) : null;
    try {
      await runTasks();
      const r = await prof?.stop(profileOut);
      if (r) {
        profileText = describeProfile(`[eval] profile of ${tasks.length} task(s)`, r, profileOut);
      }
    } finally {
      await prof?.stop(null);
    }
  } finally {
    pool.close();
    bundle.dispose();
  }
  out("");
  out(resultsMarkdown(report));
  out(
    `[eval] results: ${join(outDir, "results.json")}, ${
      join(outDir, "results.md")
    }, samples_<task>.jsonl`,
  );
  if (profileText) out(profileText);
  return report;
}

if (import.meta.main) {
  try {
    await main(Deno.args);
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
