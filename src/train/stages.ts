// The stages by number (each an implementation of the Stage interface, stage.ts) and launcher
// presets.
//
//   stages 1, 2: supervised.ts (projector alignment; LoRA or full fine-tuning)
//   stage 3:     cot_sft.ts (chain-of-thought SFT from stage 2)
//   stage 4:     preference_stage.ts (--po_loss) or grpo_stage.ts (--rl grpo), from stage 3 / 2
//
// Presets fill the flags a user did not give, like the original's launcher script: `software`
// (a CPU/software adapter such as lavapipe: the original's small "Mac" preset), `hardware`
// (a real GPU; batch sized by the adapter's buffer limits), `auto` = pick by the adapter.

import type { TrainArgs } from "./args.ts";
import type { Stage } from "./stage.ts";
import type { StepBatch } from "./step.ts";
import { SupervisedStage } from "./supervised.ts";
import { CotSftStage } from "./cot_sft.ts";
import { PreferenceStage } from "./preference_stage.ts";
import { GrpoStage } from "./grpo_stage.ts";

/** The stage implementation for parsed flags (one entry per stage). */
export function stageFor(a: TrainArgs): Stage<StepBatch> {
  switch (a.stage) {
    case 1:
    case 2:
      return new SupervisedStage(a) as Stage<StepBatch>;
    case 3:
      return new CotSftStage(a) as Stage<StepBatch>;
    case 4:
      return (a.po_loss !== null ? new PreferenceStage(a) : new GrpoStage(a)) as Stage<StepBatch>;
  }
  throw new Error(`--stage ${a.stage}: no such stage`);
}

/** Adapter facts a preset is chosen from. */
export interface AdapterInfo {
  isFallbackAdapter: boolean;
  maxBufferSize: number;
  maxStorageBufferBindingSize: number;
  description: string;
}

/** Preset names. */
export const PRESETS = ["auto", "software", "hardware", "demo"] as const;

/** Flag values of a preset for a stage (only flags the user left unset are taken). */
export function presetValues(
  name: string,
  stage: number,
  adapter: AdapterInfo,
): { name: string; values: Partial<TrainArgs>; why: string } {
  if (!(PRESETS as readonly string[]).includes(name)) {
    throw new Error(`--preset ${name}: unknown (known: ${PRESETS.join(", ")})`);
  }
  let chosen = name;
  let why = "";
  if (name === "auto") {
    chosen = adapter.isFallbackAdapter ? "software" : "hardware";
    why = `adapter "${adapter.description}" is ${
      adapter.isFallbackAdapter ? "a software (fallback) adapter" : "a hardware adapter"
    }`;
  }
  const GiB = 2 ** 30;
  switch (chosen) {
    case "software":
      // The original's Mac preset: tiny, so a CPU finishes in minutes to hours.
      return {
        name: chosen,
        why: why || "software preset",
        values: {
          per_device_train_batch_size: 2,
          gradient_accumulation_steps: 2,
          max_steps: 20,
          sub_sets: ["sharegpt4v(knowledge)"],
          max_samples: 1000,
          bf16: false,
          fp16: true,
          logging_steps: 2,
          save_steps: 10,
          eval_steps: 10,
          gen_steps: 10,
          max_eval_samples: 16,
          gen_samples: 4,
          num_proc: 2,
          dataloader_num_workers: 1,
          ...(stage >= 2 ? { use_lora: true } : {}),
        },
      };
    case "hardware": {
      // Batch by the largest buffer the adapter allows (a proxy for its memory class).
      const big = adapter.maxBufferSize >= 4 * GiB - 1;
      return {
        name: chosen,
        why: `${why || "hardware preset"}; maxBufferSize ${
          (adapter.maxBufferSize / GiB).toFixed(1)
        } GiB → batch ${big ? "4×4" : "2×8"}`,
        values: {
          per_device_train_batch_size: big ? 4 : 2,
          gradient_accumulation_steps: big ? 4 : 8,
          max_steps: stage === 1 ? 1000 : -1,
          logging_steps: 10,
          save_steps: 500,
          eval_steps: 100,
          gen_steps: 500,
          max_eval_samples: 64,
          gen_samples: 8,
          num_proc: 8,
          dataloader_num_workers: 2,
          bf16: true,
          ...(stage >= 2 ? { use_lora: true } : {}),
        },
      };
    }
    case "demo":
      return {
        name: chosen,
        why: "demo preset",
        values: {
          data_path: "shapes",
          per_device_train_batch_size: 16,
          gradient_accumulation_steps: 1,
          bf16: false,
          logging_steps: 10,
          save_steps: 1000,
          eval_steps: 1000,
          gen_steps: 1000,
          max_eval_samples: 32,
          gen_samples: 4,
        },
      };
  }
  throw new Error(`unreachable preset ${chosen}`);
}

/** Apply preset values to flags not given explicitly; returns the names it set. */
export function applyPreset(
  args: TrainArgs,
  explicit: Set<string>,
  values: Partial<TrainArgs>,
): string[] {
  const set: string[] = [];
  const rec = args as unknown as Record<string, unknown>;
  for (const [k, v] of Object.entries(values)) {
    if (explicit.has(k)) continue;
    // A precision flag given explicitly overrides the preset's precision as a whole.
    if ((k === "bf16" || k === "fp16") && (explicit.has("bf16") || explicit.has("fp16"))) continue;
    rec[k] = v;
    set.push(k);
  }
  return set;
}
