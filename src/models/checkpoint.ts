// SiQ-VL checkpoints: build a model from a SigLIP and a Qwen2 checkpoint, load our own and the
// original project's checkpoints (V3 / V1 layouts, safetensors or PyTorch .bin, LoRA merged or
// PEFT-wrapped), and save ours.
//
// Our directory: config.json (model_type "siq_vl", nested vision_config / text_config /
// projector_config), model.safetensors with V3 names (loadable by the original project), and, when
// the language model carries LoRA adapters, either a PEFT adapter beside it
// (adapter_config.json + adapter_model.safetensors) or the adapters merged into the weights.

import { dirname, join } from "node:path";
import { exists, parseJsonText, pathKind, readJson } from "../io/file.ts";
import { openFolderTensors, openTensors, type TensorReader } from "../io/reader.ts";
import { isModelFolder, type ModelFolder, requireText } from "../io/source.ts";
import { localFolder } from "../io/source_local.ts";
import { resolveModel, writeStateDict } from "../io/on_demand.ts";
import type { TensorData } from "../io/tensor_input.ts";
import type { Gpu } from "../gpu/device.ts";
import { loadParameter } from "../nn/load.ts";
import { isLoraParam } from "../nn/lora.ts";
import type { Parameter } from "../nn/parameter.ts";
import { add, cast, matmul, noGrad, scale, tidy } from "../tensor/mod.ts";
import {
  parseProjectorConfig,
  parseQwen2Config,
  parseSiglipVisionConfig,
  parseSiqvlConfig,
  type SiqvlConfig,
  siqvlConfigJson,
} from "./configs.ts";
import { mapCheckpointKeys, savedKey } from "./checkpoint_keys.ts";
import { loadPeftAdapter, savePeftAdapter } from "./peft.ts";
import { SiqvlModel } from "./siqvl.ts";
import { tensorToSafetensors } from "./tensor_bytes.ts";

type Json = Record<string, unknown>;

/** Load `names` (canonical) of `model` from `reader` through `keyOf`; returns the missing ones. */
async function fill(
  gpu: Gpu,
  params: [string, Parameter][],
  reader: TensorReader,
  keyOf: (canonical: string) => string | null | undefined,
): Promise<string[]> {
  const missing: string[] = [];
  for (const [name, p] of params) {
    const key = keyOf(name);
    if (!key || !reader.has(key)) missing.push(name);
    else await loadParameter(gpu, p, reader, key);
  }
  return missing;
}

function requireNone(missing: string[], what: string): void {
  if (missing.length) {
    throw new Error(
      `${what}: ${missing.length} parameter(s) not found: ${missing.slice(0, 6).join(", ")}` +
        (missing.length > 6 ? ", …" : ""),
    );
  }
}

/** Options for building a SiQ-VL model from separate vision and text checkpoints. */
export interface BuildSiqvlOptions {
  /** SigLIP checkpoint: a directory (config.json + weights) or a hub id "org/name[@rev]". */
  vision: string;
  /** Qwen2 checkpoint: a directory or a hub id. */
  text: string;
  /** Projector settings (default: factor 2, no LayerNorm). */
  projector?: { factor?: number | "auto"; layerNorm?: boolean; layerNormEps?: number };
  /** A safetensors file with projector.proj.weight (+ projector.norm.*); else random init. */
  projectorWeights?: string;
  /** Seed of the projector's N(0, 0.02) initialisation. */
  seed?: number;
  imageTokenId?: number;
  visionStartTokenId?: number;
  visionEndTokenId?: number;
}

/** A SiQ-VL model from a SigLIP and a Qwen2 checkpoint (the start of stage 1). */
export async function buildSiqvl(gpu: Gpu, opts: BuildSiqvlOptions): Promise<SiqvlModel> {
  const visionDir = await resolveModel(opts.vision), textDir = await resolveModel(opts.text);
  const vPath = join(visionDir, "config.json"), tPath = join(textDir, "config.json");
  const vision = parseSiglipVisionConfig(await readJson(vPath), vPath);
  const text = parseQwen2Config(await readJson(tPath), tPath);
  const pj = opts.projector ?? {};
  const config: SiqvlConfig = {
    modelType: "siq_vl",
    vision,
    text,
    projector: parseProjectorConfig(
      {
        vision_pixel_shuffle_factor: pj.factor ?? 2,
        use_layernorm: pj.layerNorm ?? false,
        layernorm_eps: pj.layerNormEps ?? 1e-5,
      },
      vision,
      text,
    ),
    imageTokenId: opts.imageTokenId ?? 151655,
    visionStartTokenId: opts.visionStartTokenId ?? 151652,
    visionEndTokenId: opts.visionEndTokenId ?? 151653,
    ignoreIndex: -100,
  };
  const model = new SiqvlModel(gpu, config);
  const params = model.namedParameters();
  const vr = await openTensors(visionDir);
  try {
    const vParams = params.filter(([n]) => n.startsWith("vision_model."));
    const missing = await fill(gpu, vParams, vr, (n) => n.slice("vision_model.".length));
    requireNone(missing, `vision checkpoint ${vr.path}`);
  } finally {
    vr.close();
  }
  const tr = await openTensors(textDir);
  try {
    const tParams = params.filter(([n]) => n.startsWith("text_model.") && !isLoraParam(n));
    const missing = await fill(gpu, tParams, tr, (n) => n.slice("text_model.".length));
    requireNone(missing, `text checkpoint ${tr.path}`);
  } finally {
    tr.close();
  }
  const pParams = params.filter(([n]) => n.startsWith("projector."));
  if (opts.projectorWeights) {
    const pr = await openTensors(opts.projectorWeights);
    try {
      const key = (
        n: string,
      ) => (n === "projector.proj.weight" && !pr.has(n) ? "projector.mlp.weight" : n);
      requireNone(await fill(gpu, pParams, pr, key), `projector weights ${pr.path}`);
    } finally {
      pr.close();
    }
  } else {
    model.projector.initialize(gpu, opts.seed ?? 0);
  }
  return model;
}

/** Options for loading a SiQ-VL checkpoint. */
export interface LoadSiqvlOptions {
  /** The model config, for checkpoints without a SiQ-VL config.json (V1). */
  config?: SiqvlConfig;
  /** alpha of PEFT-wrapped LoRA weights when no adapter_config.json says (original: 16). */
  loraAlpha?: number;
  /** Fold LoRA adapters into the base weights after loading. */
  mergeLora?: boolean;
}

/**
 * Load a SiQ-VL checkpoint: our directory, or one of the original project (V3 or V1 keys,
 * model.safetensors / pytorch_model.bin / sharded, LoRA merged or PEFT-wrapped).
 * `path` is a directory, a weights file (its directory holds config.json), a hub id, or a folder
 * object (src/io/source.ts: e.g. a URL read by ranges in a browser; model.safetensors there).
 */
export async function loadSiqvl(
  gpu: Gpu,
  path: string | ModelFolder,
  opts: LoadSiqvlOptions = {},
): Promise<SiqvlModel> {
  let folder: ModelFolder;
  let openReader: () => Promise<TensorReader>;
  if (isModelFolder(path)) {
    folder = path;
    openReader = () => openFolderTensors(folder);
  } else {
    let p = path;
    if (!(await exists(p))) p = await resolveModel(p);
    const kind = pathKind(p);
    if (!kind) throw new Error(`no such file or directory: ${p}`);
    folder = localFolder(kind === "dir" ? p : dirname(p));
    openReader = () => openTensors(p);
  }
  const dir = folder.path;
  let config = opts.config;
  if (!config) {
    const cfgPath = folder.where("config.json");
    if (!(await folder.has("config.json"))) {
      throw new Error(
        `${dir}: no config.json; a checkpoint without a SiQ-VL config (e.g. V1) needs ` +
          `options.config`,
      );
    }
    const json = parseJsonText<Json>(await requireText(folder, "config.json", "config"), cfgPath);
    if (json.model_type !== "siq_vl") {
      throw new Error(
        `${cfgPath}: model_type ${JSON.stringify(json.model_type)} is not "siq_vl" (a V1 ` +
          `checkpoint whose config.json is the LLM's needs options.config)`,
      );
    }
    config = parseSiqvlConfig(json, cfgPath);
  }
  const reader = await openReader();
  try {
    const map = mapCheckpointKeys(reader.keys());
    if (map.unknown.length) {
      throw new Error(
        `${reader.path}: ${map.unknown.length} tensor(s) of no known SiQ-VL layout ` +
          `(${map.unknown.slice(0, 5).join(", ")}${map.unknown.length > 5 ? ", …" : ""})`,
      );
    }
    config = withCheckpointProjector(config, reader, map.params);
    const model = new SiqvlModel(gpu, config);
    const params = model.namedParameters();
    requireNone(
      await fill(gpu, params, reader, (n) => map.params.get(n)),
      `checkpoint ${reader.path}`,
    );
    // Every stored tensor must have been used, except a tied head's alias (PyTorch .bin files
    // keep both names of a shared tensor).
    const names = new Set(params.map(([n]) => n));
    const unused = [...map.params.keys()].filter((n) =>
      !names.has(n) && !(n === "text_model.lm_head.weight" && config!.text.tieWordEmbeddings)
    );
    if (unused.length) {
      throw new Error(
        `${reader.path}: ${unused.length} tensor(s) have no place in a model of this config ` +
          `(${unused.slice(0, 5).map((n) => map.params.get(n)).join(", ")})`,
      );
    }
    if (map.lora.size) {
      const alpha = opts.loraAlpha ?? await adapterAlpha(folder);
      await loadInlineLora(gpu, model, reader, map.lora, alpha);
    } else if (await folder.has("adapter_config.json")) {
      await loadPeftAdapter(gpu, model.text, folder);
    }
    if (opts.mergeLora) model.text.mergeLora();
    return model;
  } finally {
    reader.close();
  }
}

// The projector settings a checkpoint's weights imply (factor from the Linear's width, LayerNorm
// when its tensors are present), checked against the config.
function withCheckpointProjector(
  config: SiqvlConfig,
  reader: TensorReader,
  params: Map<string, string>,
): SiqvlConfig {
  const key = params.get("projector.proj.weight");
  if (!key) {
    throw new Error(
      `${reader.path}: no projector weight (projector.mlp.weight / projector.proj.weight)`,
    );
  }
  const [out, inF] = reader.info(key).shape;
  const dv = config.vision.hiddenSize;
  const r = Math.round(Math.sqrt(inF / dv));
  if (r * r * dv !== inF || out !== config.text.hiddenSize) {
    throw new Error(
      `${reader.path}: projector weight "${key}" [${out}, ${inF}] does not fit vision width ${dv} ` +
        `and text width ${config.text.hiddenSize} (expected [${config.text.hiddenSize}, ${dv}·r²])`,
    );
  }
  const f = config.projector.factor;
  if (f !== "auto" && f !== r) {
    throw new Error(
      `${reader.path}: config pixel shuffle factor ${f} disagrees with the projector weight ` +
        `(${inF} = ${dv}·${r}²)`,
    );
  }
  const layerNorm = params.has("projector.norm.weight");
  return { ...config, projector: { ...config.projector, factor: r, layerNorm } };
}

async function adapterAlpha(folder: ModelFolder): Promise<number> {
  const text = await folder.text("adapter_config.json", "config");
  if (text !== undefined) {
    const a = parseJsonText<Json>(text, folder.where("adapter_config.json")).lora_alpha;
    if (typeof a === "number") return a;
  }
  console.warn(
    `siqvl: ${folder.path} stores LoRA weights without adapter_config.json; assuming lora_alpha 16 ` +
      `(the original project's default; pass loraAlpha to override)`,
  );
  return 16;
}

async function loadInlineLora(
  gpu: Gpu,
  model: SiqvlModel,
  reader: TensorReader,
  lora: Map<string, { A?: string; B?: string }>,
  alpha: number,
): Promise<void> {
  let r = 0;
  for (const [path, e] of lora) {
    if (!e.A || !e.B) {
      throw new Error(`${reader.path}: LoRA of ${path} lacks lora_${e.A ? "B" : "A"}`);
    }
    const rr = reader.info(e.A).shape[0];
    if (r && rr !== r) {
      throw new Error(`${reader.path}: LoRA ranks differ (${r} vs ${rr} at ${path})`);
    }
    r = rr;
  }
  model.text.attachLora({ r, alpha, dropout: 0 }, (path) => lora.has(path));
  for (const [path, lin] of model.text.loraLinears()) {
    const e = lora.get(path)!;
    await loadParameter(gpu, lin.lora!.A, reader, e.A!);
    await loadParameter(gpu, lin.lora!.B, reader, e.B!);
  }
}

/** Options for saving. */
export interface SaveSiqvlOptions {
  /** LoRA adapters: a PEFT adapter beside the base weights ("adapter", default) or merged. */
  lora?: "adapter" | "merge";
  /** Store float weights as this dtype (default: each tensor's own dtype). */
  dtype?: "F32" | "F16" | "BF16";
  /** Copy tokenizer / processor / generation files from this directory. */
  processorFrom?: string;
  /** Recorded as the adapter's base_model_name_or_path. */
  baseModelNameOrPath?: string;
  /** Shard model.safetensors above this many bytes (default 5 GB, as transformers). */
  maxShardBytes?: number;
}

/** Tokenizer, processor and generation files copied by `processorFrom`. */
export const PROCESSOR_FILES = [
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "added_tokens.json",
  "vocab.json",
  "merges.txt",
  "chat_template.json",
  "chat_template.jinja",
  "processor_config.json",
  "preprocessor_config.json",
  "generation_config.json",
];

/** Write `model` as our SiQ-VL directory (model.safetensors, sharded with an index when large). */
export async function saveSiqvl(
  model: SiqvlModel,
  dir: string,
  opts: SaveSiqvlOptions = {},
): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  const merge = opts.lora === "merge";
  const loraByWeight = new Map(
    model.text.loraLinears().map(([, l]) => [l.weight, l] as const),
  );
  const tensors: Record<string, TensorData> = {};
  for (const [name, p] of model.namedParameters()) {
    if (isLoraParam(name)) continue;
    const lin = merge ? loraByWeight.get(p) : undefined;
    if (lin?.lora?.enabled) {
      const l = lin.lora;
      const base = tensorToSafetensors(p.value, opts.dtype);
      tensors[savedKey(name)] = {
        ...base,
        data: async () => {
          const merged = noGrad(() =>
            tidy(() => {
              const w = p.value.dtype === "f32" ? p.value.detach() : cast(p.value, "f32");
              return add(w, scale(matmul(l.B.value, l.A.value), l.scaling));
            })
          );
          try {
            const data = tensorToSafetensors(merged, base.dtype as "F32" | "F16" | "BF16").data;
            return await (data as () => Promise<ArrayBufferView>)();
          } finally {
            merged.dispose();
          }
        },
      };
    } else {
      tensors[savedKey(name)] = tensorToSafetensors(p.value, opts.dtype);
    }
  }
  const json = siqvlConfigJson(model.config);
  await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(json, null, 2) + "\n");
  await writeStateDict(dir, tensors, { maxShardBytes: opts.maxShardBytes });
  const hasLora = model.text.loraLinears().length > 0;
  for (const f of ["adapter_config.json", "adapter_model.safetensors"]) {
    await Deno.remove(join(dir, f)).catch(() => {});
  }
  if (hasLora && !merge) {
    await savePeftAdapter(model.text, dir, { baseModelNameOrPath: opts.baseModelNameOrPath });
  }
  if (opts.processorFrom) {
    for (const f of PROCESSOR_FILES) {
      const src = join(opts.processorFrom, f);
      if (await exists(src)) await Deno.copyFile(src, join(dir, f));
    }
  }
}
