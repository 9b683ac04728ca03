// Exports that the PyTorch / Hugging Face stack loads with one line:
//
//   dir/config.json + model.safetensors   the original SiQ-VL layout (SiQ_VLConfig, V3 keys),
//                                          plus `auto_map` → the shipped configuration_siqvl.py /
//                                          modeling_siqvl.py, so that
//                                          AutoModelForCausalLM.from_pretrained(dir,
//                                          trust_remote_code=True) loads it;
//   dir/vision/                            a standard SiglipVisionModel folder
//                                          (vision_use_head: false — the pooling head is dropped);
//   dir/text/                              a standard Qwen2ForCausalLM folder (+ tokenizer files).
//
// A stage-2 export that keeps its LoRA adapter beside the base weights is marked in config.json
// (`siqvl_lora`); the shipped modeling code merges the adapter in float32 when it loads.
//
// Works on the files of an exported directory (its config.json and weights, single or sharded),
// so any writer of that layout can call it; `torch_dtype` is set from the stored tensors.

import { join } from "node:path";
import type { StoredDType } from "./dtype.ts";
import { exists, isFile, readJson, writeJson } from "./file.ts";
import { openTensors, type TensorReader } from "./reader.ts";
import { writeStateDict } from "./state_dict.ts";
import type { TensorData } from "./tensor_input.ts";

type Json = Record<string, unknown>;

/** The Python files shipped into every export (python/siqvl_hf/ of this project). */
export const HF_CODE_FILES: readonly string[] = ["configuration_siqvl.py", "modeling_siqvl.py"];

/** config.json `auto_map`: the classes the Auto* factories load with trust_remote_code. */
export const HF_AUTO_MAP: Readonly<Record<string, string>> = {
  AutoConfig: "configuration_siqvl.SiQ_VLConfig",
  AutoModel: "modeling_siqvl.SiQ_VLForCausalLM",
  AutoModelForCausalLM: "modeling_siqvl.SiQ_VLForCausalLM",
};

/**
 * config.json `siqvl_lora` of an export that keeps the LoRA adapter beside base weights, so no
 * reader mistakes model.safetensors for the trained model; modeling_siqvl.py merges it on load.
 */
export const ADAPTER_MARKER: Readonly<Record<string, unknown>> = {
  merged: false,
  adapter: "adapter_model.safetensors",
  adapter_config: "adapter_config.json",
  note: "model.safetensors holds the BASE language model weights; the trained model is base + " +
    "the PEFT LoRA adapter beside it (siqvl applies it; AutoModelForCausalLM with " +
    "trust_remote_code merges it on load; --merge_lora also writes merged/)",
};

/** Files of the language model's tokenizer copied into `text/`. */
const TOKENIZER_FILES = [
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "vocab.json",
  "merges.txt",
  "added_tokens.json",
  "generation_config.json",
];

const TORCH_DTYPE: Partial<Record<StoredDType, string>> = {
  F32: "float32",
  F16: "float16",
  BF16: "bfloat16",
  F64: "float64",
};

/** The torch dtype name of the floating tensors whose key matches `prefix` (most bytes wins). */
export function storedTorchDtype(reader: TensorReader, prefix = ""): string | undefined {
  const bytes = new Map<string, number>();
  for (const k of reader.keys()) {
    if (!k.startsWith(prefix)) continue;
    const { dtype, shape } = reader.info(k);
    const name = TORCH_DTYPE[dtype];
    if (!name) continue;
    bytes.set(name, (bytes.get(name) ?? 0) + shape.reduce((a, b) => a * b, 1));
  }
  let best: string | undefined, most = -1;
  for (const [name, n] of bytes) if (n > most) [best, most] = [name, n];
  return best;
}

async function readShipped(name: string): Promise<string> {
  const url = new URL(`../../python/siqvl_hf/${name}`, import.meta.url);
  if (url.protocol === "file:") return await Deno.readTextFile(url);
  const res = await fetch(url);
  if (!res.ok) throw new Error(`cannot fetch ${url}: HTTP ${res.status}`);
  return await res.text();
}

/**
 * Make `dir` (config.json + weights in the SiQ-VL layout) loadable by
 * `AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)`: writes the Python files,
 * adds `auto_map`, sets `torch_dtype` (top level and per part) from the stored tensors and
 * `vision_use_head: false` (the SigLIP pooling head is not part of a SiQ-VL model).
 */
export async function writeHfRemoteCode(dir: string): Promise<void> {
  for (const f of HF_CODE_FILES) await Deno.writeTextFile(join(dir, f), await readShipped(f));
  const cfgPath = join(dir, "config.json");
  const cfg = await readJson<Json>(cfgPath);
  const reader = await openTensors(dir);
  try {
    const vision: Json = { ...(cfg.vision_config as Json), vision_use_head: false };
    const text: Json = { ...(cfg.text_config as Json) };
    const vd = storedTorchDtype(reader, "vision_model.");
    const td = storedTorchDtype(reader, "text_model.");
    if (vd) vision.torch_dtype = vd;
    if (td) text.torch_dtype = td;
    const all = storedTorchDtype(reader);
    await writeJson(cfgPath, {
      ...cfg,
      auto_map: HF_AUTO_MAP,
      vision_config: vision,
      text_config: text,
      ...(all ? { torch_dtype: all } : {}),
      tie_word_embeddings: text.tie_word_embeddings ?? true,
      ...(await exists(join(dir, "adapter_config.json")) ? { siqvl_lora: ADAPTER_MARKER } : {}),
    });
  } finally {
    reader.close();
  }
}

/** One standard HF folder: keys under `from` renamed to `to` + rest, with its config. */
async function writePart(
  reader: TensorReader,
  out: string,
  from: string,
  to: string,
  config: Json,
  skip: (key: string) => boolean = () => false,
): Promise<number> {
  const tensors: Record<string, TensorData> = {};
  for (const k of reader.keys()) {
    if (!k.startsWith(from) || skip(k)) continue;
    const { dtype, shape } = reader.info(k);
    tensors[to + k.slice(from.length)] = { dtype, shape, data: () => reader.read(k) };
  }
  const n = Object.keys(tensors).length;
  if (n === 0) throw new Error(`${reader.path}: no tensors under "${from}" to export`);
  await Deno.mkdir(out, { recursive: true });
  const dtype = storedTorchDtype(reader, from);
  await writeJson(join(out, "config.json"), {
    ...config,
    ...(dtype ? { torch_dtype: dtype } : {}),
  });
  await writeStateDict(out, tensors, {});
  return n;
}

/**
 * Write `dir/vision/` (SiglipVisionModel) and `dir/text/` (Qwen2ForCausalLM, with the tokenizer
 * files found in `dir`) from the exported SiQ-VL weights. A LoRA adapter kept beside unmerged
 * weights is not applied: the text folder then holds the base model (its README says so).
 */
export async function writeHfParts(dir: string): Promise<{ vision: string; text: string }> {
  const cfg = await readJson<Json>(join(dir, "config.json"));
  const reader = await openTensors(dir);
  const vision = join(dir, "vision"), text = join(dir, "text");
  try {
    await writePart(reader, vision, "vision_model.", "", {
      ...(cfg.vision_config as Json),
      model_type: "siglip_vision_model",
      architectures: ["SiglipVisionModel"],
      vision_use_head: false,
    }, (k) => k.startsWith("vision_model.vision_model.head."));
    await writePart(reader, text, "text_model.", "", {
      ...(cfg.text_config as Json),
      model_type: "qwen2",
      architectures: ["Qwen2ForCausalLM"],
    });
  } finally {
    reader.close();
  }
  for (const f of TOKENIZER_FILES) {
    if (isFile(join(dir, f))) await Deno.copyFile(join(dir, f), join(text, f));
  }
  if (await exists(join(dir, "adapter_config.json"))) {
    await Deno.writeTextFile(
      join(text, "README.md"),
      "Base Qwen2 weights of a SiQ-VL stage-2 LoRA run: the adapter in ../adapter_model." +
        "safetensors is NOT merged into this folder.\n",
    );
  }
  return { vision, text };
}
