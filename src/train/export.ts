// The final model directory of a stage: the model (config.json + model.safetensors, plus the PEFT
// adapter files with LoRA), tokenizer and processor files, generation_config.json and a model
// card README.md; optionally pytorch_model.bin and a merged LoRA export in `merged/`.
//
// Everything is first written to `.final.tmp-{pid}/` inside the stage directory and then moved
// in, config.json last: a directory with config.json + model.safetensors is always complete.

import { isAbsolute, join, relative, resolve } from "node:path";
import type { SiqvlProcessor } from "../data/processor.ts";
import { exists, readJson } from "../io/file.ts";
import { writeHfParts, writeHfRemoteCode } from "../io/hf_interop.ts";
import { openTensors } from "../io/reader.ts";
import { writeStateDict } from "../io/state_dict.ts";
import { nonFiniteCount } from "../tensor/ops/finite.ts";
import { PROCESSOR_FILES, saveSiqvl } from "../models/checkpoint.ts";
import type { SiqvlModel } from "../models/siqvl.ts";
import { runBaseName, shortModelName } from "./checkpoint.ts";
import type { StagePlan } from "./stage.ts";

/** Facts the model card and configs are written from. */
export interface ExportInfo {
  visionId: string;
  textId: string;
  plan: StagePlan;
  globalStep: number;
  learningRate: number;
  batchSize: number;
  gradientAccumulation: number;
  lora?: { r: number; alpha: number; dropout: number; targets: string[] };
  dataset: string;
  subsets?: string[];
  trainLoss?: number;
  evalLoss?: number;
  exactMatch?: number;
  /** Benchmark results "<task>/<metric>" → value (--eval_tasks, src/eval/callback.ts). */
  benchmarks?: Record<string, number>;
  numTrainable: number;
  numTotal: number;
  /** Precision flag in words ("bf16 storage of frozen weights, f32 math"). */
  precision: string;
  genMaxNewTokens: number;
  /** Directory the tokenizer files come from (text model or stage-1 result). */
  tokenizerFrom: string;
}

/** Tokenizer, chat template, processor, image-processor and generation configs into `dir`. */
export async function writeProcessorFiles(
  dir: string,
  model: SiqvlModel,
  processor: SiqvlProcessor,
  tokenizerFrom: string,
  genMaxNewTokens: number,
): Promise<void> {
  for (const f of PROCESSOR_FILES) {
    if (/^(processor|preprocessor|generation)_config\.json$|^chat_template\./.test(f)) continue;
    const src = join(tokenizerFrom, f);
    if (await exists(src)) await Deno.copyFile(src, join(dir, f));
  }
  if (!(await exists(join(dir, "tokenizer.json")))) {
    throw new Error(`${tokenizerFrom}: no tokenizer.json to copy into the model directory`);
  }
  // The chat template the model was trained with (SiQ-VL's ChatML unless the source had one).
  await Deno.writeTextFile(join(dir, "chat_template.jinja"), processor.template.source);
  const v = model.config.vision;
  const factor = model.projector.factor;
  const writeJson = (name: string, value: unknown) =>
    Deno.writeTextFile(join(dir, name), JSON.stringify(value, null, 2) + "\n");
  await writeJson("processor_config.json", {
    processor_class: "SiQ_VLProcessor",
    vit_image_size: v.imageSize,
    vit_patch_size: v.patchSize,
    pixel_shuffle_factor: factor,
    image_tokens_per_image: processor.tokensPerImage,
    system_prompt: processor.systemPrompt ?? "",
    enable_dynamic_tiling: false,
  });
  const im = processor.image;
  await writeJson("preprocessor_config.json", {
    image_processor_type: "SiQ_VLImageProcessor",
    vit_image_size: v.imageSize,
    max_dynamic_patch: 1,
    do_resize: im.doResize,
    size: { height: im.size, width: im.size },
    resample: im.resample,
    do_rescale: im.doRescale,
    rescale_factor: im.rescaleFactor,
    do_normalize: im.doNormalize,
    image_mean: im.mean,
    image_std: im.std,
  });
  const t = model.config.text;
  const stop = [processor.ids.endOfTurn];
  if (processor.ids.pad !== processor.ids.endOfTurn) stop.push(processor.ids.pad);
  await writeJson("generation_config.json", {
    bos_token_id: t.bosTokenId ?? null,
    eos_token_id: stop,
    pad_token_id: processor.ids.pad,
    do_sample: false,
    num_beams: 1,
    max_new_tokens: genMaxNewTokens,
    repetition_penalty: 1.0,
  });
}

function fmt(x: number | undefined, digits = 4): string {
  return x === undefined || !Number.isFinite(x) ? "n/a" : x.toFixed(digits);
}

/** The model card (README.md with hub metadata). */
export function modelCard(info: ExportInfo, hubId?: string): string {
  const v = shortModelName(info.visionId), t = shortModelName(info.textId);
  const stage = info.plan.stage;
  const how = info.plan.llm === "frozen"
    ? "projector only (vision tower and language model frozen)"
    : info.plan.llm === "lora"
    ? `projector + LoRA adapters on the language model (r ${info.lora?.r}, alpha ${info.lora?.alpha}, ` +
      `dropout ${info.lora?.dropout}, targets ${info.lora?.targets.join(", ")}); vision frozen`
    : "projector + the whole language model; vision frozen";
  const lines = [
    "---",
    "license: apache-2.0",
    "library_name: siqvl",
    "pipeline_tag: image-text-to-text",
    "base_model:",
    `- ${info.visionId}`,
    `- ${info.textId}`,
    "tags:",
    "- siq-vl",
    "- vision-language",
    "- webgpu",
    `- stage${stage}`,
    ...(info.subsets?.length ? ["datasets:", `- ${info.dataset}`] : []),
    "---",
    "",
    `# ${hubId ?? runBaseName(info.visionId, info.textId, stage)}`,
    "",
    `A SiQ-VL vision-language model (${v} vision tower → pixel-shuffle projector → ${t}), ` +
    `stage ${stage}, trained with [siqvl](https://github.com/) on WebGPU.`,
    "",
    "## Training",
    "",
    `- trained: ${how}`,
    `- data: ${info.dataset}${
      info.subsets?.length ? ` (subsets: ${info.subsets.join(", ")})` : ""
    }`,
    `- optimizer steps: ${info.globalStep}; batch ${info.batchSize} × accumulation ` +
    `${info.gradientAccumulation}; peak learning rate ${info.learningRate}, cosine schedule ` +
    "with 3% warmup; AdamW (0.9, 0.999, 1e-8), weight decay 0.01 (not on biases and norm " +
    "weights), gradient clipping 1.0",
    `- precision: ${info.precision}`,
    `- trainable parameters: ${info.numTrainable.toLocaleString("en-US")} of ` +
    `${info.numTotal.toLocaleString("en-US")}`,
    `- final train loss: ${fmt(info.trainLoss)}; eval loss: ${fmt(info.evalLoss)}` +
    (info.exactMatch !== undefined ? `; generation exact match: ${fmt(info.exactMatch, 3)}` : ""),
    ...(info.benchmarks && Object.keys(info.benchmarks).length
      ? [
        "",
        "## Evaluation",
        "",
        "Benchmark tasks at the last step (`deno task eval`; task/metric):",
        "",
        "| task/metric | value |",
        "|---|---:|",
        ...Object.entries(info.benchmarks).map(([k, v]) => `| ${k} | ${fmt(v)} |`),
      ]
      : []),
    "",
    "## Files",
    "",
    "- `config.json` (model_type `siq_vl`), `model.safetensors` (state-dict names of the original " +
    "SiQ-VL: `vision_model.vision_model.*`, `projector.mlp.weight`, `text_model.model.*`)",
    ...(info.plan.llm === "lora"
      ? [
        "- `adapter_config.json`, `adapter_model.safetensors`: the PEFT LoRA adapter of the " +
        "language model. **`model.safetensors` holds the base language-model weights: the " +
        "trained model needs this adapter** (config.json `siqvl_lora`; siqvl applies it, PEFT " +
        "does in PyTorch; `--merge_lora` also writes `merged/` with the adapter merged in f32)",
      ]
      : []),
    "- `configuration_siqvl.py`, `modeling_siqvl.py` (`auto_map`): " +
    "`AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)` loads it in PyTorch; " +
    "`vision/` (SiglipVisionModel) and `text/` (Qwen2ForCausalLM) are standard HF folders",
    "- tokenizer files, `chat_template.jinja`, `processor_config.json`, " +
    "`preprocessor_config.json`, `generation_config.json`",
    "",
    "## Use",
    "",
    "```sh",
    "deno run -A --unstable-webgpu cli/generate.ts --checkpoint <this directory> \\",
    '  --image photo.jpg --question "What is shown in the image?"',
    "```",
    "",
    "Answers end with `<|im_end|>` (the end-of-turn token is trained, unlike the original " +
    "SiQ-VL).",
    "",
  ];
  return lines.join("\n");
}

/** What {@link writeFinalModel} wrote. */
export interface ExportResult {
  dir: string;
  files: string[];
  merged?: string;
  /** Optional extras that failed (the final model itself is in place). */
  warnings: string[];
}

/**
 * The adapter's `base_model_name_or_path`: a hub id as given, or a local model directory as a
 * path relative to the export directory (never an absolute local path).
 */
export function adapterBaseName(textId: string, exportDir: string): string {
  const local = isAbsolute(textId) || textId.startsWith(".") || isDirSync(textId);
  return local ? relative(resolve(exportDir), resolve(textId)) || "." : textId;
}

function isDirSync(p: string): boolean {
  try {
    return Deno.statSync(p).isDirectory;
  } catch {
    return false;
  }
}

/**
 * The loadable model files into `dir` (the final directory, `merged/`, and every mid-run
 * `checkpoint-N/`): config.json + weights in the SiQ-VL layout (the LoRA adapter beside them,
 * marked, or merged), tokenizer and processor files, the model card and the PyTorch modeling
 * code. `relativeTo` is where the directory will live (the adapter's base model path is
 * written relative to it).
 */
export async function writeModelDir(
  model: SiqvlModel,
  processor: SiqvlProcessor,
  dir: string,
  info: ExportInfo,
  opts: { lora?: "adapter" | "merge"; relativeTo?: string; hubId?: string } = {},
): Promise<void> {
  const baseModelNameOrPath = adapterBaseName(info.textId, opts.relativeTo ?? dir);
  await saveSiqvl(model, dir, { lora: opts.lora ?? "adapter", baseModelNameOrPath });
  await writeProcessorFiles(dir, model, processor, info.tokenizerFrom, info.genMaxNewTokens);
  await Deno.writeTextFile(join(dir, "README.md"), modelCard(info, opts.hubId));
  await writeHfRemoteCode(dir);
}

/** Write the final model into `stageDir` (atomically per directory, see module docs). */
export async function writeFinalModel(
  model: SiqvlModel,
  processor: SiqvlProcessor,
  stageDir: string,
  info: ExportInfo,
  opts: { mergeLora?: boolean; pytorchBin?: boolean; hubId?: string } = {},
): Promise<ExportResult> {
  // Never export weights that cannot be trusted (checked on the GPU, one readback).
  const trainable = model.namedParameters().filter(([, p]) =>
    p.trainable && p.value.dtype === "f32"
  );
  const bad = trainable.length ? await nonFiniteCount(trainable.map(([, p]) => p.value)) : 0;
  if (bad > 0) {
    throw new Error(
      `refusing to export the final model to ${stageDir}: the trainable weights hold ${bad} ` +
        "non-finite (NaN/Inf) values",
    );
  }
  if (info.evalLoss !== undefined && !Number.isFinite(info.evalLoss)) {
    throw new Error(
      `refusing to export the final model to ${stageDir}: eval loss is ${info.evalLoss}`,
    );
  }
  const tmp = join(stageDir, `.final.tmp-${Deno.pid}`);
  await Deno.remove(tmp, { recursive: true }).catch(() => {});
  await Deno.mkdir(tmp, { recursive: true });
  const warnings: string[] = [];
  const fill = (dir: string, lora: "adapter" | "merge") =>
    writeModelDir(model, processor, dir, info, { lora, relativeTo: stageDir, hubId: opts.hubId });
  // Extras never take the final model with them: a failure is reported and cleaned up.
  const extra = async (what: string, dir: string, run: () => Promise<unknown>, undo: string[]) => {
    try {
      await run();
    } catch (e) {
      for (const p of undo) await Deno.remove(join(dir, p), { recursive: true }).catch(() => {});
      const w = `${what} failed (the final model is complete): ${(e as Error).message}`;
      warnings.push(w);
      console.error(`[siqvl] warning: ${w}`);
    }
  };
  const extras = async (dir: string) => {
    await extra("HF vision/ and text/ folders", dir, () => writeHfParts(dir), ["vision", "text"]);
    if (opts.pytorchBin) {
      await extra("--save_pytorch_bin", dir, () => safetensorsToTorchBin(dir), []);
    }
  };
  try {
    await fill(tmp, "adapter");
    // Move in, config.json last (the "final model present" marker).
    const names = [...Deno.readDirSync(tmp)].map((e) => e.name).sort();
    const ordered = [...names.filter((n) => n !== "config.json"), "config.json"];
    await Deno.remove(join(stageDir, "config.json")).catch(() => {});
    for (const n of ordered) await Deno.rename(join(tmp, n), join(stageDir, n));
  } finally {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
  await extras(stageDir);
  const result: ExportResult = { dir: stageDir, files: [], warnings };
  result.files = [...Deno.readDirSync(stageDir)]
    .filter((e) => e.isFile)
    .map((e) => e.name)
    .sort();
  if (opts.mergeLora && model.text.loraLinears().length) {
    const mtmp = join(stageDir, `.merged.tmp-${Deno.pid}`);
    const merged = join(stageDir, "merged");
    await Deno.remove(mtmp, { recursive: true }).catch(() => {});
    await Deno.mkdir(mtmp);
    await extra("--merge_lora", stageDir, async () => {
      try {
        await fill(mtmp, "merge");
        await extras(mtmp);
        await Deno.remove(merged, { recursive: true }).catch(() => {});
        await Deno.rename(mtmp, merged);
        result.merged = merged;
      } finally {
        await Deno.remove(mtmp, { recursive: true }).catch(() => {});
      }
    }, []);
  }
  return result;
}

/**
 * Write the PyTorch weights beside the safetensors ones with the same tensors and the same
 * sharding: `pytorch_model.bin`, or `pytorch_model-0000k-of-0000n.bin` + its index when the
 * export is sharded (`model.safetensors.index.json`).
 */
export async function safetensorsToTorchBin(dir: string): Promise<void> {
  const reader = await openTensors(dir);
  try {
    const tensors = reader.keys().map((name) => {
      const info = reader.info(name);
      return { name, dtype: info.dtype, shape: info.shape, data: () => reader.read(name) };
    });
    let maxShardBytes: number | undefined;
    const index = join(dir, "model.safetensors.index.json");
    if (await exists(index)) {
      // Same shard boundaries as the safetensors files: cap at the largest shard.
      const files = new Set(Object.values((await readJson(index)).weight_map as object));
      let largest = 0;
      for (const f of files) largest = Math.max(largest, (await Deno.stat(join(dir, f))).size);
      maxShardBytes = largest;
    }
    await writeStateDict(dir, tensors, { format: "bin", maxShardBytes, keepOther: true });
  } finally {
    reader.close();
  }
}
