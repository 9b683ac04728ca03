// Command-line flags of `cli/train.ts`: the original SiQ-VL `scripts/train.py` flags with their
// meanings (FACTS §1.12), plus --stage, --resume_from_checkpoint, --gradient_checkpointing and a
// few optimisation knobs. Parsing is strict: an unknown flag, a malformed number or a
// contradictory combination is an error that names the flag.
//
// Spellings: `--flag value` and `--flag=value`; booleans as `--flag`, `--no_flag` or `--no-flag`
// (the original's `--no_bf16`, `--no_use_lora`, `--no_freeze_text_model`, `--no_distributed`).

import { parseArgs } from "node:util";
import { LORA_TARGETS } from "../models/qwen2.ts";
import { SCHEDULE_TYPES } from "./schedule.ts";
import { REASONING_FORMATS } from "../data/reasoning.ts";
import { isReferenceFree, PO_LOSSES } from "./po_loss.ts";
import { GRPO_LOSS_TYPES } from "./grpo.ts";

type Kind = "string" | "int" | "float" | "bool" | "list" | "floats";

interface FlagSpec {
  kind: Kind;
  /** Default; `null` = none (see `later`). */
  def: unknown;
  help: string;
  /** Lower bound for numbers (inclusive), or a validator. */
  min?: number;
  check?: (v: unknown) => string | null;
  /** The only values allowed (also narrows the flag's type). */
  choices?: readonly (string | number)[];
  /** A `null` default filled after parsing (stage, stage-dependent defaults): never null. */
  later?: true;
  /** Must be equal to resume a run from its checkpoint. */
  resume?: true;
}

const DEFAULT_SUBSETS = "coco_colors,densefusion_1m,face_emotion,google_landmarks,laion_gpt4v," +
  "sharegpt4o,sharegpt4v(coco),sharegpt4v(llava),sharegpt4v(knowledge),sharegpt4v(sam)";

/** Every flag: kind, default and one line of help (the order is the --help order). */
/** --activation_budget_mb when not given (MiB of kept block activations). */
export const DEFAULT_ACTIVATION_BUDGET_MB = 1024;

export const FLAGS = {
  stage: {
    later: true,
    choices: [1, 2, 3, 4],
    resume: true,
    kind: "int",
    def: null,
    help: "1 = projector alignment (vision + LLM frozen); 2 = projector + LLM (LoRA or full); " +
      "3 = chain-of-thought SFT from stage 2; 4 = preference optimisation (--po_loss) or RL " +
      "(--rl grpo) from stage 3 (or 2). Default: $STAGE, else 1",
  },
  data_path: {
    resume: true,
    kind: "string",
    def: "HuggingFaceM4/FineVision",
    help: "dataset: a hub id / local FineVision parquet dir, a .jsonl file, or " +
      "'shapes[:SIZE[:KINDS]]' (generated; KINDS a comma list of color, shape, count, where; " +
      "a kind listed twice is drawn twice as often)",
  },
  sub_sets: {
    resume: true,
    kind: "list",
    def: DEFAULT_SUBSETS,
    help: "comma list of subsets (configs)",
  },
  sub_sets_weights: {
    resume: true,
    kind: "floats",
    def: null,
    help: "comma list of sampling weights, one per subset (default: equal)",
  },
  vision_model_name_or_path: {
    resume: true,
    kind: "string",
    def: "google/siglip2-base-patch16-224",
    help: "SigLIP vision tower (hub id or local dir)",
  },
  text_model_name_or_path: {
    resume: true,
    kind: "string",
    def: "Qwen/Qwen2.5-0.5B-Instruct",
    help: "Qwen2.5 language model (hub id or local dir)",
  },
  stage_1_checkpoint_path: {
    kind: "string",
    def: null,
    help: "stage 2: the stage-1 result to start from (default: the latest matching stage-1 " +
      "run under --output_dir)",
  },
  stage_2_checkpoint_path: {
    kind: "string",
    def: null,
    help: "stages 3 and 4: the stage-2 result to start from (default: the latest matching " +
      "stage-2 run under --output_dir)",
  },
  stage_3_checkpoint_path: {
    kind: "string",
    def: null,
    help: "stage 4: the stage-3 result to start from (default: the latest matching stage-3 " +
      "run, else --stage_2_checkpoint_path / the latest stage-2 run)",
  },
  reasoning_format: {
    resume: true,
    kind: "string",
    def: "think",
    choices: REASONING_FORMATS,
    help: "stages 3-4: how rationale + answer become the assistant text and how the answer is " +
      "read back (think: <think>R</think> A; llava-cot: <REASONING>R</REASONING> " +
      "<CONCLUSION>A</CONCLUSION>; plain: R then A on the last line; none: A)",
  },
  image_column: {
    resume: true,
    kind: "string",
    def: null,
    help: "stages 3-4 record files: the image column (default: image, images, image_path)",
  },
  question_column: {
    resume: true,
    kind: "string",
    def: null,
    help: "stages 3-4 record files: the question / prompt column (default: question, problem, " +
      "prompt, query)",
  },
  rationale_column: {
    resume: true,
    kind: "string",
    def: null,
    help: "stage 3 record files: the reasoning column (default: rationale, reasoning, " +
      "solution, explanation, cot)",
  },
  answer_column: {
    resume: true,
    kind: "string",
    def: null,
    help: "stages 3-4 record files: the final-answer column (default: answer, final_answer, " +
      "label; an integer indexes a `choices` list)",
  },
  chosen_column: {
    resume: true,
    kind: "string",
    def: null,
    help: "stage 4 --po_loss record files: the preferred completion (default: chosen)",
  },
  rejected_column: {
    resume: true,
    kind: "string",
    def: null,
    help: "stage 4 --po_loss record files: the dispreferred completion (default: rejected)",
  },
  po_loss: {
    resume: true,
    kind: "string",
    def: null,
    choices: PO_LOSSES,
    help: "stage 4: preference loss — sigmoid (DPO; with --label_smoothing = cDPO), ipo, " +
      "hinge, simpo (reference-free), orpo (reference-free); needs preference data",
  },
  beta: {
    later: true,
    resume: true,
    kind: "float",
    def: null,
    min: 0,
    help: "stage 4: β — preference losses (default 0.1) or the GRPO KL coefficient (default 0: " +
      "no reference pass)",
  },
  label_smoothing: {
    resume: true,
    kind: "float",
    def: 0,
    help: "stage 4 sigmoid / simpo: label-flip probability ε (conservative DPO)",
    check: (v: unknown): string | null =>
      (v as number) >= 0 && (v as number) < 0.5 ? null : "must be in [0, 0.5)",
  },
  simpo_gamma: {
    resume: true,
    kind: "float",
    def: 0.5,
    help: "stage 4 --po_loss simpo: target reward margin γ",
  },
  precompute_ref_log_probs: {
    resume: true,
    kind: "bool",
    def: false,
    help: "stage 4 --po_loss: one reference pass over the training pairs before training, " +
      "stored with the checkpoints (full fine-tuning: no frozen copy of the model is kept)",
  },
  rl: {
    resume: true,
    kind: "string",
    def: null,
    choices: ["grpo"],
    help: "stage 4: reinforcement learning with verifiable rewards (grpo); needs data with " +
      "answers",
  },
  num_generations: {
    resume: true,
    kind: "int",
    def: 8,
    min: 2,
    help: "--rl grpo: completions sampled per prompt (a group)",
  },
  temperature: {
    resume: true,
    kind: "float",
    def: 1,
    min: 0,
    help: "--rl grpo: sampling temperature of the rollouts",
  },
  top_p: {
    resume: true,
    kind: "float",
    def: 1,
    help: "--rl grpo: nucleus sampling of the rollouts",
    check: (v: unknown): string | null =>
      (v as number) > 0 && (v as number) <= 1 ? null : "must be in (0, 1]",
  },
  max_completion_length: {
    resume: true,
    kind: "int",
    def: 256,
    min: 1,
    help: "--rl grpo: longest sampled completion (tokens)",
  },
  epsilon: {
    resume: true,
    kind: "float",
    def: 0.2,
    min: 0,
    help: "--rl grpo: clipping of the probability ratio to [1 − ε, 1 + ε]",
  },
  reward_funcs: {
    resume: true,
    kind: "list",
    def: "exact",
    help: "--rl grpo: comma list of rewards — exact, numeric, mc, format, or a path to a " +
      "TypeScript module exporting `reward(completions, ctx)` (see src/train/rewards.ts)",
  },
  reward_weights: {
    resume: true,
    kind: "floats",
    def: null,
    help: "--rl grpo: one weight per reward function (default 1 each)",
  },
  scale_rewards: {
    resume: true,
    kind: "string",
    def: "group",
    choices: ["group", "batch", "none"],
    help: "--rl grpo: advantages divided by the group's reward std, the batch's, or not at all",
  },
  grpo_loss_type: {
    resume: true,
    kind: "string",
    def: "dapo",
    choices: GRPO_LOSS_TYPES,
    help: "--rl grpo: token aggregation — dapo (over all completion tokens), grpo (per " +
      "completion, then mean), dr_grpo (by completions × max_completion_length)",
  },
  freeze_text_model: {
    later: true,
    kind: "bool",
    def: null,
    help: "stage 1 freezes the LLM (always); stage 2 trains it (LoRA or full) — kept for " +
      "compatibility, a value that contradicts the stage is an error",
  },
  freeze_vision_model: {
    kind: "bool",
    def: true,
    help: "the vision tower is frozen in stages 1 and 2 (no gradient memory); " +
      "--no_freeze_vision_model is an error",
  },
  use_lora: {
    resume: true,
    kind: "bool",
    def: false,
    help: "stage 2: train LoRA adapters instead of the LLM",
  },
  lora_r: { resume: true, kind: "int", def: 64, min: 1, help: "LoRA rank" },
  lora_alpha: {
    resume: true,
    kind: "float",
    def: 16,
    min: 0,
    help: "LoRA alpha (scale = alpha / r)",
  },
  lora_dropout: {
    resume: true,
    kind: "float",
    def: 0.05,
    help: "LoRA dropout probability",
    check: (v: unknown): string | null =>
      (v as number) >= 0 && (v as number) < 1 ? null : "must be in [0, 1)",
  },
  lora_target_modules: {
    resume: true,
    kind: "list",
    def: LORA_TARGETS.join(","),
    help: "comma list of projections to adapt",
    check: (v: unknown): string | null => {
      const bad = (v as string[]).filter((m) => !(LORA_TARGETS as readonly string[]).includes(m));
      return bad.length ? `unknown module(s) ${bad.join(", ")} (known: ${LORA_TARGETS})` : null;
    },
  },
  pixel_shuffle_factor: {
    resume: true,
    kind: "int",
    def: 2,
    min: 1,
    help: "pixel-shuffle factor r",
  },
  enable_dynamic_tiling: {
    kind: "bool",
    def: false,
    help: "dynamic tiling (not supported by this trainer: an error when set)",
  },
  output_dir: { kind: "string", def: "./outputs", help: "where run directories are created" },
  per_device_train_batch_size: {
    resume: true,
    kind: "int",
    def: 8,
    min: 1,
    help: "micro-batch size",
  },
  gradient_accumulation_steps: {
    resume: true,
    kind: "int",
    def: 4,
    min: 1,
    help: "micro-batches per optimizer step (loss = token-weighted mean over the window)",
  },
  max_steps: {
    resume: true,
    kind: "int",
    def: -1,
    help: "optimizer steps; <= 0 = one pass: ceil(samples / (batch · accumulation))",
  },
  max_samples: {
    resume: true,
    kind: "int",
    def: null,
    min: 1,
    help: "use at most this many samples",
  },
  num_proc: { kind: "int", def: 96, min: 1, help: "data preparation parallelism (accepted)" },
  dataloader_num_workers: {
    kind: "int",
    def: 4,
    min: 0,
    help: "batches prepared ahead of the GPU (0 = none)",
  },
  learning_rate: {
    later: true,
    resume: true,
    kind: "float",
    def: null,
    min: 0,
    help: "peak learning rate (default: 1e-3 stage 1, 2e-5 stage 2)",
  },
  lr_scheduler_type: {
    choices: SCHEDULE_TYPES,
    resume: true,
    kind: "string",
    def: "cosine",
    help: `${SCHEDULE_TYPES.join(" | ")}`,
  },
  warmup_ratio: {
    resume: true,
    kind: "float",
    def: 0.03,
    help: "warmup steps = ceil(max_steps · ratio)",
    check: (v: unknown): string | null =>
      (v as number) >= 0 && (v as number) <= 1 ? null : "must be in [0, 1]",
  },
  weight_decay: {
    resume: true,
    kind: "float",
    def: 0.01,
    min: 0,
    help: "AdamW decoupled weight decay (never on biases / norm weights)",
  },
  max_grad_norm: { kind: "float", def: 1.0, min: 0, help: "global-norm clipping (0 = off)" },
  bf16: {
    resume: true,
    kind: "bool",
    def: true,
    help: "store frozen weights as bfloat16 on the GPU (math in f32; trainable weights f32)",
  },
  fp16: {
    resume: true,
    kind: "bool",
    def: false,
    help: "store frozen weights as float16 instead (needs --no_bf16)",
  },
  logging_steps: { kind: "int", def: 10, min: 1, help: "read back + log metrics every N steps" },
  save_steps: { kind: "int", def: 500, min: 1, help: "checkpoint every N steps" },
  save_total_limit: {
    kind: "int",
    def: 3,
    min: 0,
    help: "keep at most N checkpoints (0 = all)",
  },
  eval_steps: { kind: "int", def: 100, min: 1, help: "eval loss every N steps" },
  max_eval_samples: {
    resume: true,
    kind: "int",
    def: 2,
    min: 0,
    help: "held-out samples for eval (0 = none)",
  },
  gen_samples: { kind: "int", def: 20, min: 0, help: "fixed eval samples for generation eval" },
  gen_steps: { kind: "int", def: 500, min: 1, help: "generation eval every N steps" },
  gen_max_new_tokens: { kind: "int", def: 64, min: 1, help: "generation eval: max new tokens" },
  eval_tasks: {
    kind: "list",
    def: null,
    help: "benchmark tasks (src/eval/tasks names or task .json files) run every gen_steps; " +
      "logged as eval/<task>/<metric>",
  },
  eval_limit: { kind: "int", def: 64, min: 1, help: "--eval_tasks: questions per task" },
  gen_temperature: {
    kind: "float",
    def: 0,
    min: 0,
    help: "generation eval: 0 = greedy, > 0 = sampling",
  },
  gen_num_beams: { kind: "int", def: 1, min: 1, help: "generation eval: beam search width" },
  seed: {
    resume: true,
    kind: "int",
    def: 42,
    min: 0,
    check: (v) => (v as number) > 0xffffffff ? "must be <= 4294967295 (seeds are 32-bit)" : null,
    help: "seed for init, data order, dropout, sampling",
  },
  use_distributed: {
    kind: "bool",
    def: false,
    help: "multi-GPU (not supported: one WebGPU device; --no_distributed accepted)",
  },
  push_to_hub: { kind: "bool", def: false, help: "upload the final model to the hub" },
  hub_model_id: {
    kind: "string",
    def: null,
    help: "hub repo id (default siq-vl_{vision}_{text}_{stage})",
  },
  resume_from_checkpoint: {
    kind: "string",
    def: null,
    help: "a checkpoint-N dir, a run dir (its latest checkpoint) or 'latest' (the newest " +
      "matching run under --output_dir)",
  },
  gradient_checkpointing: {
    kind: "bool",
    def: true,
    help: "recompute each transformer block in backward (less activation memory); how many " +
      "really recompute: --activation_budget_mb",
  },
  activation_budget_mb: {
    kind: "float",
    def: null,
    min: 0,
    help: "with gradient checkpointing (the default): keep the activations of transformer " +
      "blocks, in order, while their total stays within N MiB, and recompute only the blocks " +
      `past it (default ${DEFAULT_ACTIVATION_BUDGET_MB}: at Qwen2.5-0.5B shapes with one image ` +
      "and 300 tokens 17 of 24 blocks keep theirs, under PyTorch's peak memory; 0 = " +
      "recompute every block, least memory; a large N = keep all). The split is logged after " +
      "the first step. An error with --no_gradient_checkpointing (then every block keeps its " +
      "activations)",
  },
  profile: {
    kind: "bool",
    def: false,
    help: "profile a window of optimizer steps (src/gpu/profile.ts): print tables per kernel " +
      "family, model part (vision, projector, llm.*, loss, backward:*, recompute:*, " +
      "optimizer) and kernel at the end (dispatches, GPU time, bytes bound, share), and write " +
      "them to <stage dir>/profile.json. Results are unchanged; the profiled steps run a few " +
      "percent slower (one compute pass per dispatch)",
  },
  profile_steps: {
    kind: "int",
    def: 3,
    min: 1,
    help: "--profile: optimizer steps in the window, which starts at this process's second " +
      "step (the first compiles the shaders; a run of one step profiles that one); evals, " +
      "generation evals and saves inside the window are not counted",
  },
  merge_lora: { kind: "bool", def: false, help: "with LoRA: also export a merged model" },
  save_pytorch_bin: {
    kind: "bool",
    def: false,
    help: "also write pytorch_model.bin in the final directory",
  },
  report_to: {
    kind: "list",
    def: "jsonl",
    help: "comma list of: jsonl (always on), tensorboard, none",
    check: (v: unknown): string | null => {
      const bad = (v as string[]).filter((x) => !["jsonl", "tensorboard", "none"].includes(x));
      return bad.length ? `unknown target(s) ${bad.join(", ")} (jsonl, tensorboard, none)` : null;
    },
  },
  max_length: {
    resume: true,
    kind: "int",
    def: null,
    min: 8,
    help: "truncate sequences to N tokens (default: the model's max_position_embeddings; " +
      "longer samples are then dropped and counted)",
  },
  max_file_mb: {
    kind: "float",
    def: null,
    min: 0.001,
    help: "raise the size cap of files read whole (images 64 MiB, configs 16 MiB, LLaVA JSON " +
      "1 GiB by default)",
  },
  max_image_pixels: {
    kind: "int",
    def: null,
    min: 1,
    help: "largest image decoded, width × height (default 89478485; checked from the header)",
  },
  allow_outside_images: {
    kind: "bool",
    def: false,
    help: "LLaVA data: allow image paths outside the JSON's folder (absolute, .., links out)",
  },
  max_nonfinite_steps: {
    kind: "int",
    def: 5,
    min: 1,
    help: "stop after N consecutive steps with non-finite loss/gradients",
  },
  run_name: {
    kind: "string",
    def: null,
    help: "run directory name (default siq-vl_{vision}_{text}_{stage}_{YYYYmmdd_HHMMSS})",
  },
  preset: {
    kind: "string",
    def: null,
    help: "fill unset flags from a preset: auto (by adapter), software, hardware, demo",
  },
} as const satisfies Record<string, FlagSpec>;

type ValueOf<S> = S extends { choices: readonly (infer C)[] } ? C
  : S extends { kind: "string" } ? string
  : S extends { kind: "int" | "float" } ? number
  : S extends { kind: "bool" } ? boolean
  : S extends { kind: "list" } ? string[]
  : S extends { kind: "floats" } ? number[]
  : never;
type NullOf<S> = S extends { later: true } ? never : S extends { def: null } ? null : never;
type Flags = typeof FLAGS;

/** Parsed training flags (snake_case, as on the command line), typed from {@link FLAGS}. */
export type TrainArgs = { -readonly [K in keyof Flags]: ValueOf<Flags[K]> | NullOf<Flags[K]> };

/** Flags that must be equal to resume a run (marked `resume` in {@link FLAGS}). */
export const RESUME_KEYS: (keyof TrainArgs)[] = (Object.keys(FLAGS) as (keyof TrainArgs)[])
  .filter((k) => (FLAGS[k] as FlagSpec).resume);

/** The table by name, for lookups by a string read from the command line. */
const SPECS: Record<string, FlagSpec> = FLAGS;

/** Original aliases: `--no_distributed` = `--no_use_distributed`. */
const NEG_ALIASES: Record<string, string> = { distributed: "use_distributed" };

/** The result of parsing: values with defaults applied and the flags given explicitly. */
export interface ParsedArgs {
  args: TrainArgs;
  explicit: Set<string>;
  help: boolean;
}

function closest(name: string): string | null {
  let best: string | null = null, bestD = Infinity;
  for (const k of Object.keys(SPECS)) {
    const d = editDistance(name, k);
    if (d < bestD) [best, bestD] = [k, d];
  }
  return bestD <= Math.max(2, Math.floor(name.length / 4)) ? best : null;
}

function editDistance(a: string, b: string): number {
  const dp = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = dp[0];
    dp[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = dp[j];
      dp[j] = Math.min(dp[j] + 1, dp[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
  }
  return dp[b.length];
}

/** Convert one raw string value of flag `name`. */
function convert(name: string, spec: FlagSpec, raw: string): unknown {
  const bad = (why: string) => new Error(`--${name}: ${why} (got "${raw}")`);
  let v: unknown;
  switch (spec.kind) {
    case "string":
      if (raw === "") throw bad("needs a value");
      v = raw;
      break;
    case "int": {
      const n = Number(raw);
      if (raw.trim() === "" || !Number.isInteger(n)) throw bad("expected an integer");
      v = n;
      break;
    }
    case "float": {
      const n = Number(raw);
      if (raw.trim() === "" || !Number.isFinite(n)) throw bad("expected a number");
      v = n;
      break;
    }
    case "list":
      v = raw.split(",").map((s) => s.trim()).filter((s) => s.length);
      if (!(v as string[]).length) throw bad("expected a comma-separated list");
      break;
    case "floats": {
      const parts = raw.split(",").map((s) => s.trim());
      const nums = parts.map(Number);
      if (parts.some((p) => p === "") || nums.some((n) => !Number.isFinite(n))) {
        throw bad("expected a comma-separated list of numbers");
      }
      v = nums;
      break;
    }
    case "bool":
      throw new Error("internal: convert() of a boolean");
  }
  if (spec.min !== undefined && typeof v === "number" && v < spec.min) {
    throw bad(`must be >= ${spec.min}`);
  }
  if (spec.choices && !spec.choices.includes(v as string | number)) {
    throw bad(`must be one of ${spec.choices.join(", ")}`);
  }
  const why = spec.check?.(v);
  if (why) throw bad(why);
  return v;
}

/** Normalise argv: `--no_x` → `--no-x`, `--flag -1` → `--flag=-1`, hyphenated names kept. */
function normalise(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i];
    if (a.startsWith("--no_") || a.startsWith("--no-")) {
      const base = a.slice(5).split("=")[0];
      const name = NEG_ALIASES[base] ?? base;
      if (SPECS[name]?.kind === "bool") {
        if (a.includes("=")) throw new Error(`${a}: a negated flag takes no value`);
        a = `--no-${name}`;
      }
    }
    const m = /^--([A-Za-z0-9_]+)$/.exec(a);
    const next = argv[i + 1];
    if (
      m && SPECS[m[1]] && SPECS[m[1]].kind !== "bool" && next !== undefined &&
      /^-\d/.test(next)
    ) {
      out.push(`${a}=${next}`);
      i++;
      continue;
    }
    out.push(a);
  }
  return out;
}

/** Parse argv into TrainArgs. Throws a clear error for unknown, malformed or contradictory flags. */
export function parseTrainArgs(
  argv: string[],
  env: Record<string, string | undefined> = {},
): ParsedArgs {
  const options: Record<string, { type: "string" | "boolean" }> = { help: { type: "boolean" } };
  for (const [k, s] of Object.entries(SPECS)) {
    options[k] = { type: s.kind === "bool" ? "boolean" : "string" };
  }
  options.h = { type: "boolean" };
  let parsed;
  try {
    parsed = parseArgs({
      args: normalise(argv),
      options,
      strict: true,
      allowPositionals: false,
      allowNegative: true,
      tokens: true,
    });
  } catch (e) {
    const msg = (e as Error).message;
    const m = /Unknown option '(-{1,2})([^']+)'/.exec(msg);
    if (m) {
      const name = m[2].replace(/^no-/, "").replace(/-/g, "_");
      const hint = SPECS[name] ? `--${name}` : closest(name) ? `--${closest(name)}` : null;
      throw new Error(
        `unknown flag ${m[1]}${m[2]}` + (hint ? ` (did you mean ${hint}?)` : "") +
          "; see --help",
      );
    }
    if (/Unexpected argument/.test(msg)) throw new Error(`${msg.split("\n")[0]}; see --help`);
    throw new Error(`${msg.split("\n")[0]}; see --help`);
  }
  const explicit = new Set<string>();
  const seen = new Map<string, string>();
  for (const t of parsed.tokens ?? []) {
    if (t.kind !== "option") continue;
    const name = t.name.startsWith("no-") ? t.name.slice(3) : t.name;
    if (name === "help" || name === "h") continue;
    if (seen.has(name)) {
      throw new Error(`--${name} is given twice (${seen.get(name)} and ${t.rawName})`);
    }
    seen.set(name, t.rawName);
    explicit.add(name);
  }
  const values = parsed.values as Record<string, string | boolean | undefined>;
  const out: Record<string, unknown> = {};
  for (const [name, spec] of Object.entries(SPECS)) {
    const raw = values[name];
    if (raw === undefined) {
      out[name] = spec.def === null
        ? null
        : spec.kind === "bool"
        ? spec.def
        : convert(name, spec, String(spec.def));
    } else if (spec.kind === "bool") out[name] = raw;
    else out[name] = convert(name, spec, raw as string);
  }
  // Stage: flag, else $STAGE, else 1.
  if (out.stage === null) {
    const s = env.STAGE;
    out.stage = s !== undefined && s !== "" ? convert("stage", SPECS.stage, s) : 1;
  }
  const args = out as unknown as TrainArgs;
  return { args, explicit, help: Boolean(values.help || values.h) };
}

/**
 * Fill stage-dependent defaults and reject contradictions. `explicit` lists flags the user gave
 * (presets are applied before this, only to flags not in `explicit`).
 */
export function finalizeArgs(args: TrainArgs, explicit: Set<string>): TrainArgs {
  const a = { ...args };
  const given = (k: keyof TrainArgs) => explicit.has(k);
  if (a.learning_rate === null) {
    // stage 3: the plan's 1e-5 (1e-5 to 2e-5); stage 4: TRL's DPO/GRPO 1e-6, with adapters 1e-5
    a.learning_rate = a.stage === 1
      ? 1e-3
      : a.stage === 2
      ? 2e-5
      : a.stage === 3 || a.use_lora
      ? 1e-5
      : 1e-6;
  }
  checkStage34(a, given);
  if (a.freeze_text_model === null) a.freeze_text_model = a.stage === 1;
  if (a.stage === 1 && !a.freeze_text_model) {
    throw new Error(
      "--no_freeze_text_model contradicts --stage 1 (stage 1 trains the projector only); " +
        "train the LLM with --stage 2",
    );
  }
  if (a.stage >= 2 && given("freeze_text_model") && a.freeze_text_model) {
    throw new Error(
      `--freeze_text_model contradicts --stage ${a.stage} (stage ${a.stage} trains the LLM, ` +
        "fully or with --use_lora); use --stage 1 to train the projector alone",
    );
  }
  if (!a.freeze_vision_model) {
    throw new Error(
      "--no_freeze_vision_model: the vision tower is frozen in stages 1 and 2 (no gradients " +
        "are kept for it)",
    );
  }
  if (a.bf16 && a.fp16) {
    if (given("bf16")) throw new Error("--bf16 and --fp16 contradict each other: pick one");
    a.bf16 = false; // --fp16 alone turns the bf16 default off, as the original did
  }
  if (a.use_lora && a.stage === 1) {
    throw new Error("--use_lora needs --stage 2, 3 or 4 (stage 1 trains the projector only)");
  }
  if (!a.use_lora) {
    for (const k of ["lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "merge_lora"]) {
      if (explicit.has(k)) throw new Error(`--${k} has no effect without --use_lora`);
    }
  }
  if (a.stage !== 2 && given("stage_1_checkpoint_path")) {
    throw new Error("--stage_1_checkpoint_path is for --stage 2 (it names the stage-1 result)");
  }
  if (a.stage < 3 && given("stage_2_checkpoint_path")) {
    throw new Error(
      "--stage_2_checkpoint_path is for --stage 3 or 4 (it names the stage-2 result)",
    );
  }
  if (a.stage !== 4 && given("stage_3_checkpoint_path")) {
    throw new Error("--stage_3_checkpoint_path is for --stage 4 (it names the stage-3 result)");
  }
  if (a.sub_sets_weights && a.sub_sets_weights.length !== a.sub_sets.length) {
    throw new Error(
      `--sub_sets_weights has ${a.sub_sets_weights.length} values for ${a.sub_sets.length} ` +
        "subsets (--sub_sets): give one weight per subset",
    );
  }
  if (a.sub_sets_weights && a.sub_sets_weights.some((w) => w < 0)) {
    throw new Error("--sub_sets_weights: weights must be >= 0");
  }
  if (a.sub_sets_weights && !a.sub_sets_weights.some((w) => w > 0)) {
    throw new Error("--sub_sets_weights: at least one weight must be > 0");
  }
  if (a.enable_dynamic_tiling) {
    throw new Error(
      "--enable_dynamic_tiling is not supported by this trainer (one tile per image)",
    );
  }
  if (a.use_distributed) {
    throw new Error(
      "--use_distributed: this trainer runs on one WebGPU device; for several GPUs export the " +
        "checkpoint and continue in PyTorch",
    );
  }
  if (a.gen_num_beams > 1 && a.gen_temperature > 0) {
    throw new Error(
      `--gen_num_beams ${a.gen_num_beams} with --gen_temperature ${a.gen_temperature}: beam ` +
        "search is deterministic; use one or the other",
    );
  }
  if (a.hub_model_id !== null && !a.push_to_hub) {
    throw new Error("--hub_model_id has no effect without --push_to_hub");
  }
  if (a.report_to.includes("none") && a.report_to.length > 1) {
    throw new Error(`--report_to ${a.report_to.join(",")}: "none" cannot be combined`);
  }
  if (a.activation_budget_mb !== null && !a.gradient_checkpointing) {
    throw new Error(
      "--activation_budget_mb chooses which checkpointed blocks recompute: it has no effect " +
        "with --no_gradient_checkpointing (every block keeps its activations)",
    );
  }
  if (given("profile_steps") && !a.profile) {
    throw new Error("--profile_steps has no effect without --profile");
  }
  if (a.dataloader_num_workers > 64) {
    throw new Error(`--dataloader_num_workers ${a.dataloader_num_workers}: at most 64`);
  }
  return a;
}

/** Flags that belong to one stage-4 method (or to stages 3-4), by owner. */
const PO_FLAGS = ["label_smoothing", "simpo_gamma", "precompute_ref_log_probs"] as const;
const RL_FLAGS = [
  "num_generations",
  "temperature",
  "top_p",
  "max_completion_length",
  "epsilon",
  "reward_funcs",
  "reward_weights",
  "scale_rewards",
  "grpo_loss_type",
] as const;
const STAGE34_FLAGS = [
  "reasoning_format",
  "image_column",
  "question_column",
  "rationale_column",
  "answer_column",
  "chosen_column",
  "rejected_column",
] as const;

/** Stage 3 / 4 combinations (called by finalizeArgs): every message names the flag. */
function checkStage34(a: TrainArgs, given: (k: keyof TrainArgs) => boolean): void {
  const only = (flags: readonly (keyof TrainArgs)[], cond: boolean, need: string) => {
    for (const k of flags) if (given(k) && !cond) throw new Error(`--${k} needs ${need}`);
  };
  only(STAGE34_FLAGS, a.stage >= 3, "--stage 3 or 4");
  only(["po_loss", "rl", "beta"], a.stage === 4, "--stage 4");
  only(PO_FLAGS, a.po_loss !== null, "--stage 4 --po_loss …");
  only(RL_FLAGS, a.rl !== null, "--stage 4 --rl grpo");
  only(["chosen_column", "rejected_column"], a.po_loss !== null, "--po_loss (preference data)");
  only(["rationale_column"], a.stage === 3, "--stage 3");
  if (a.stage === 4 && a.po_loss === null && a.rl === null) {
    throw new Error("--stage 4 needs --po_loss sigmoid|ipo|hinge|simpo|orpo or --rl grpo");
  }
  if (a.po_loss !== null && a.rl !== null) {
    throw new Error(`--po_loss ${a.po_loss} and --rl ${a.rl} are two stage-4 methods: pick one`);
  }
  if (a.beta === null) a.beta = a.rl !== null ? 0 : 0.1;
  if (a.po_loss !== null && !(a.beta > 0)) {
    throw new Error(`--beta ${a.beta}: the preference losses need β > 0`);
  }
  const data = a.data_path;
  if (a.po_loss !== null && /^shapes(_cot)?(:|$)/.test(data)) {
    throw new Error(
      `--po_loss ${a.po_loss} needs preference data (chosen/rejected): --data_path ${data} has ` +
        "none; use shapes_preference or a record file with chosen and rejected columns",
    );
  }
  if ((a.rl !== null || a.stage === 3) && /^shapes_preference(:|$)/.test(data)) {
    throw new Error(
      `${a.rl !== null ? `--rl ${a.rl}` : "--stage 3"} needs data with answers: --data_path ` +
        `${data} holds preference pairs; use shapes_cot or a record file with answers`,
    );
  }
  if (a.rl !== null && /^shapes(:|$)/.test(data)) {
    throw new Error(
      `--rl ${a.rl} needs questions with reference answers in a reasoning format: ` +
        `--data_path ${data} is stage-1/2 data; use shapes_cot`,
    );
  }
  if (a.precompute_ref_log_probs && a.po_loss !== null && isReferenceFree(a.po_loss)) {
    throw new Error(
      `--precompute_ref_log_probs has no effect with --po_loss ${a.po_loss} (reference-free)`,
    );
  }
  if (a.reward_weights && a.reward_weights.length !== a.reward_funcs.length) {
    throw new Error(
      `--reward_weights has ${a.reward_weights.length} values for ${a.reward_funcs.length} ` +
        "--reward_funcs: give one weight per reward",
    );
  }
  if (a.rl !== null && a.per_device_train_batch_size % a.num_generations !== 0) {
    throw new Error(
      `--per_device_train_batch_size ${a.per_device_train_batch_size} must be a multiple of ` +
        `--num_generations ${a.num_generations} (rows = prompts × generations)`,
    );
  }
}

/** The --help text. */
export function trainHelp(): string {
  const lines = [
    "Usage: deno task train [flags]   (deno run -A --unstable-webgpu cli/train.ts [flags])",
    "",
    "Trains SiQ-VL: SigLIP vision tower -> pixel-shuffle projector -> Qwen2.5, on WebGPU.",
    "  stage 1: vision + LLM frozen, projector trained (lr 1e-3)",
    "  stage 2: vision frozen, projector + LLM trained fully (lr 2e-5) or with --use_lora",
    "           (r 64, alpha 16, dropout 0.05, all seven projections); starts from a stage-1",
    "           result (--stage_1_checkpoint_path, default: the latest matching stage-1 run)",
    "  stage 3: chain-of-thought SFT from a stage-2 result (lr 1e-5; LoRA adapters continue);",
    "           --reasoning_format think|llava-cot|plain|none shapes rationale + answer",
    "  stage 4: from a stage-3 (else stage-2) result: --po_loss sigmoid|ipo|hinge|simpo|orpo on",
    "           preference pairs (reference = adapters off with LoRA), or --rl grpo with",
    "           verifiable rewards (--reward_funcs) on questions with answers",
    "",
    "Precision on WebGPU: --bf16 (default) / --fp16 / --no_bf16 choose the STORAGE dtype of the",
    "frozen weights on the GPU (bfloat16 / float16 / float32). Every kernel widens them to f32:",
    "all arithmetic and accumulation is f32, activations and gradients are f32, and trainable",
    "weights (projector, LoRA, the LLM in full stage 2) plus their AdamW moments are f32 master",
    "copies. There is no autocast: bf16/fp16 halve weight memory and bandwidth, not the math.",
    "",
    "Flags (--flag value or --flag=value; booleans --flag / --no_flag):",
  ];
  for (const [name, s] of Object.entries(SPECS)) {
    const def = s.def === null ? "" : ` (default ${s.kind === "bool" ? s.def : String(s.def)})`;
    const kind = s.kind === "bool"
      ? ""
      : s.kind === "list" || s.kind === "floats"
      ? " a,b,..."
      : s.kind === "string"
      ? " <str>"
      : " <n>";
    lines.push(`  --${name}${kind}${def}`);
    lines.push(`      ${s.help}`);
  }
  lines.push("  --help, -h", "      this text");
  return lines.join("\n");
}
