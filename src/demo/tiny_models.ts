// Randomly initialised SigLIP and Qwen2 checkpoints, written as ordinary Hugging Face model
// directories (config.json + model.safetensors [+ tokenizer files]) so that the demo, the
// end-to-end test and the step benchmark go through exactly the loading code real checkpoints
// use. Weights are drawn on the CPU from a seeded generator, one tensor at a time.
//
// Initialisation (std per tensor, zero biases, unit norm weights):
//   vision: patch conv 1/√(3·P²) (LeCun), position table `posStd`, q/k/v/fc1 1/√fan_in,
//           out_proj/fc2 `residualScale`/√fan_in (small residual branches keep the patch content
//           dominant in a frozen random tower)
//   text:   embedding `embedStd` (tied head), every projection `projStd`

import { join } from "node:path";
import { writeSafetensors } from "../io/safetensors.ts";
import type { TensorData } from "../io/tensor_input.ts";
import { parseQwen2Config, parseSiglipVisionConfig } from "../models/configs.ts";
import { Qwen2ForCausalLM } from "../models/qwen2.ts";
import { SiglipVisionModel } from "../models/siglip.ts";
import type { Module } from "../nn/module.ts";
import type { Parameter } from "../nn/parameter.ts";
import { rng } from "../nn/random.ts";
import { encode } from "../tensor/tensor.ts";

/** A SigLIP vision tower's shape. */
export interface VisionSpec {
  imageSize: number;
  patchSize: number;
  hidden: number;
  layers: number;
  heads: number;
  intermediate: number;
}

/** A Qwen2 language model's shape and special ids. */
export interface TextSpec {
  vocabSize: number;
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  intermediate: number;
  eosTokenId: number;
  padTokenId?: number;
  bosTokenId?: number;
  ropeTheta?: number;
  maxPositions?: number;
}

/** Initialisation scales (see module docs). */
export interface InitSpec {
  seed: number;
  posStd?: number;
  residualScale?: number;
  embedStd?: number;
  projStd?: number;
}

/** HF config.json of a SigLIP vision tower. */
export function visionConfigJson(s: VisionSpec): Record<string, unknown> {
  return {
    model_type: "siglip_vision_model",
    architectures: ["SiglipVisionModel"],
    hidden_size: s.hidden,
    intermediate_size: s.intermediate,
    num_hidden_layers: s.layers,
    num_attention_heads: s.heads,
    num_channels: 3,
    image_size: s.imageSize,
    patch_size: s.patchSize,
    hidden_act: "gelu_pytorch_tanh",
    layer_norm_eps: 1e-6,
    attention_dropout: 0,
    torch_dtype: "float32",
  };
}

/** HF config.json of a Qwen2 causal LM (tied embeddings, like Qwen2.5-0.5B). */
export function textConfigJson(s: TextSpec): Record<string, unknown> {
  return {
    model_type: "qwen2",
    architectures: ["Qwen2ForCausalLM"],
    vocab_size: s.vocabSize,
    hidden_size: s.hidden,
    intermediate_size: s.intermediate,
    num_hidden_layers: s.layers,
    num_attention_heads: s.heads,
    num_key_value_heads: s.kvHeads,
    hidden_act: "silu",
    max_position_embeddings: s.maxPositions ?? 4096,
    rms_norm_eps: 1e-6,
    rope_theta: s.ropeTheta ?? 10000,
    rope_scaling: null,
    use_sliding_window: false,
    attention_dropout: 0,
    tie_word_embeddings: true,
    initializer_range: 0.02,
    bos_token_id: s.bosTokenId ?? s.padTokenId ?? s.eosTokenId,
    eos_token_id: s.eosTokenId,
    ...(s.padTokenId !== undefined ? { pad_token_id: s.padTokenId } : {}),
    torch_dtype: "float32",
  };
}

/** The std of one parameter under `init` (0 = constant). */
function stdFor(name: string, p: Parameter, init: InitSpec): { std: number; constant?: number } {
  if (p.role === "vector") {
    if (/position_embedding/.test(name)) return { std: init.posStd ?? 0.02 };
    if (/(norm|layer_norm\d?|post_layernorm)\.weight$/.test(name)) return { std: 0, constant: 1 };
    return { std: 0, constant: 0 }; // biases
  }
  const fanIn = p.shape.slice(1).reduce((a, b) => a * b, 1);
  if (name.startsWith("vision_model.")) {
    if (/patch_embedding\.weight$/.test(name)) return { std: 1 / Math.sqrt(fanIn) };
    if (/(out_proj|fc2)\.weight$/.test(name)) {
      return { std: (init.residualScale ?? 0.5) / Math.sqrt(fanIn) };
    }
    return { std: 1 / Math.sqrt(fanIn) };
  }
  if (/embed_tokens\.weight$/.test(name)) return { std: init.embedStd ?? 0.02 };
  return { std: init.projStd ?? 0.02 };
}

/** Normal(0, std) values from a seeded stream (Box–Muller). */
function normals(n: number, std: number, r: () => number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const u1 = Math.max(r(), 1e-300), u2 = r();
    const rad = Math.sqrt(-2 * Math.log(u1)) * std;
    out[i] = rad * Math.cos(2 * Math.PI * u2);
    if (i + 1 < n) out[i + 1] = rad * Math.sin(2 * Math.PI * u2);
  }
  return out;
}

/** Random weights of `module` as safetensors entries (drawn when written). */
export function randomTensors(
  module: Module,
  init: InitSpec,
  dtype: "F32" | "BF16" = "F32",
): Record<string, TensorData> {
  const out: Record<string, TensorData> = {};
  module.namedParameters().forEach(([name, p], i) => {
    const { std, constant } = stdFor(name, p, init);
    const half = dtype === "BF16" && p.role !== "vector";
    out[name] = {
      dtype: half ? "BF16" : "F32",
      shape: [...p.shape],
      data: () => {
        const v = constant !== undefined
          ? new Float32Array(p.size).fill(constant)
          : normals(p.size, std, rng((init.seed * 1000003 + i * 7919) >>> 0));
        if (!half) return v;
        return encode(v, "bf16").subarray(0, p.size * 2);
      },
    };
  });
  return out;
}

/** Write a random SigLIP vision tower as a model directory. */
export async function writeRandomVision(
  dir: string,
  spec: VisionSpec,
  init: InitSpec,
  dtype: "F32" | "BF16" = "F32",
): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  const json = visionConfigJson(spec);
  if (dtype === "BF16") json.torch_dtype = "bfloat16";
  const model = new SiglipVisionModel(parseSiglipVisionConfig(json));
  await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(json, null, 2) + "\n");
  await writeSafetensors(join(dir, "model.safetensors"), randomTensors(model, init, dtype), {
    format: "pt",
  });
}

/** Write a random Qwen2 LM as a model directory (tokenizer files are the caller's). */
export async function writeRandomText(
  dir: string,
  spec: TextSpec,
  init: InitSpec,
  dtype: "F32" | "BF16" = "F32",
): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  const json = textConfigJson(spec);
  if (dtype === "BF16") json.torch_dtype = "bfloat16";
  const model = new Qwen2ForCausalLM(parseQwen2Config(json));
  await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(json, null, 2) + "\n");
  await writeSafetensors(join(dir, "model.safetensors"), randomTensors(model, init, dtype), {
    format: "pt",
  });
}
