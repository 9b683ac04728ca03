// Typed model configs parsed from Hugging Face config.json files, with the transformers class
// defaults for absent fields and clear errors for missing or unsupported ones.
//
//   parseSiglipVisionConfig  model_type "siglip_vision_model", or "siglip" (its vision_config)
//   parseQwen2Config         model_type "qwen2"
//   parseSiqvlConfig         model_type "siq_vl" with nested vision_config / text_config /
//                            projector_config (the original project's SiQ_VLConfig)

type Json = Record<string, unknown>;

/** SigLIP vision tower (HF SiglipVisionConfig). */
export interface SiglipVisionConfig {
  modelType: "siglip_vision_model";
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  numChannels: number;
  imageSize: number;
  patchSize: number;
  hiddenAct: "gelu_pytorch_tanh";
  layerNormEps: number;
  /** Storage dtype the checkpoint declares (informative). */
  torchDtype?: string;
}

/** Qwen2 / Qwen2.5 causal LM (HF Qwen2Config). */
export interface Qwen2Config {
  modelType: "qwen2";
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  numKeyValueHeads: number;
  headDim: number;
  hiddenAct: "silu";
  maxPositionEmbeddings: number;
  rmsNormEps: number;
  ropeTheta: number;
  tieWordEmbeddings: boolean;
  bosTokenId?: number;
  eosTokenId?: number | number[];
  padTokenId?: number;
  torchDtype?: string;
}

/** Pixel-shuffle projector. */
export interface ProjectorConfig {
  /** Pixel-shuffle factor r, or "auto" = the smallest factor ≥ 2 that divides the patch grid. */
  factor: number | "auto";
  visionHiddenSize: number;
  textHiddenSize: number;
  /** V1 layout: a LayerNorm after the Linear. */
  layerNorm: boolean;
  layerNormEps: number;
}

/** A whole SiQ-VL model. */
export interface SiqvlConfig {
  modelType: "siq_vl";
  vision: SiglipVisionConfig;
  text: Qwen2Config;
  projector: ProjectorConfig;
  imageTokenId: number;
  visionStartTokenId: number;
  visionEndTokenId: number;
  ignoreIndex: number;
}

function num(c: Json, key: string, def: number | undefined, where: string): number {
  const v = c[key];
  if (v === undefined || v === null) {
    if (def === undefined) throw new Error(`${where}: required field "${key}" is missing`);
    return def;
  }
  if (typeof v !== "number" || !Number.isFinite(v)) {
    throw new Error(`${where}: field "${key}" must be a number, got ${JSON.stringify(v)}`);
  }
  return v;
}

function int(c: Json, key: string, def: number | undefined, where: string): number {
  const v = num(c, key, def, where);
  if (!Number.isInteger(v) || v < 0) {
    throw new Error(`${where}: field "${key}" must be a non-negative integer, got ${v}`);
  }
  return v;
}

function optInt(c: Json, key: string): number | undefined {
  const v = c[key];
  return typeof v === "number" ? v : undefined;
}

/**
 * Parse a SigLIP vision config: a SiglipVisionConfig ("siglip_vision_model"), or a full SiglipModel
 * config ("siglip", whose vision_config is used and whose text tower is ignored).
 */
export function parseSiglipVisionConfig(
  json: Json,
  where = "vision config.json",
): SiglipVisionConfig {
  const mt = json.model_type;
  if (mt === "siglip2" || mt === "siglip2_vision_model") {
    throw new Error(
      `${where}: model_type "${mt}" is a NaFlex SigLIP2 checkpoint (pre-patchified inputs, ` +
        `resized position table, attention masks), which siqvl does not support. Use a ` +
        `fixed-resolution SigLIP / SigLIP2 checkpoint (model_type "siglip"), e.g. ` +
        `google/siglip2-base-patch16-224.`,
    );
  }
  let c = json;
  if (mt === "siglip") {
    const vc = json.vision_config;
    if (!vc || typeof vc !== "object") {
      throw new Error(`${where}: "siglip" config without vision_config`);
    }
    c = vc as Json;
  } else if (mt !== "siglip_vision_model") {
    throw new Error(
      `${where}: model_type ${JSON.stringify(mt)} is not a SigLIP vision model ` +
        `(expected "siglip_vision_model" or "siglip")`,
    );
  }
  const act = (c.hidden_act ?? "gelu_pytorch_tanh") as string;
  if (act !== "gelu_pytorch_tanh") {
    throw new Error(`${where}: hidden_act "${act}" is not supported (only gelu_pytorch_tanh)`);
  }
  const cfg: SiglipVisionConfig = {
    modelType: "siglip_vision_model",
    hiddenSize: int(c, "hidden_size", 768, where),
    intermediateSize: int(c, "intermediate_size", 3072, where),
    numHiddenLayers: int(c, "num_hidden_layers", 12, where),
    numAttentionHeads: int(c, "num_attention_heads", 12, where),
    numChannels: int(c, "num_channels", 3, where),
    imageSize: int(c, "image_size", 224, where),
    patchSize: int(c, "patch_size", 16, where),
    hiddenAct: "gelu_pytorch_tanh",
    layerNormEps: num(c, "layer_norm_eps", 1e-6, where),
    torchDtype: (c.torch_dtype ?? json.torch_dtype) as string | undefined,
  };
  if (cfg.hiddenSize % cfg.numAttentionHeads !== 0) {
    throw new Error(
      `${where}: hidden_size ${cfg.hiddenSize} is not divisible by num_attention_heads ` +
        `${cfg.numAttentionHeads}`,
    );
  }
  return cfg;
}

/** Parse a Qwen2 config (transformers Qwen2Config defaults). */
export function parseQwen2Config(c: Json, where = "text config.json"): Qwen2Config {
  if (c.model_type !== "qwen2") {
    throw new Error(`${where}: model_type ${JSON.stringify(c.model_type)} is not "qwen2"`);
  }
  const act = (c.hidden_act ?? "silu") as string;
  if (act !== "silu") throw new Error(`${where}: hidden_act "${act}" is not supported (only silu)`);
  if (c.rope_scaling !== undefined && c.rope_scaling !== null) {
    throw new Error(`${where}: rope_scaling ${JSON.stringify(c.rope_scaling)} is not supported`);
  }
  if (c.use_sliding_window === true) {
    throw new Error(`${where}: use_sliding_window = true is not supported`);
  }
  const heads = int(c, "num_attention_heads", 32, where);
  const hidden = int(c, "hidden_size", 4096, where);
  const kv = int(c, "num_key_value_heads", heads, where);
  if (heads % kv !== 0) {
    throw new Error(
      `${where}: num_attention_heads ${heads} is not a multiple of num_key_value_heads ${kv}`,
    );
  }
  const headDim = int(c, "head_dim", Math.floor(hidden / heads), where);
  if (headDim % 2 !== 0) throw new Error(`${where}: head_dim ${headDim} must be even for RoPE`);
  return {
    modelType: "qwen2",
    vocabSize: int(c, "vocab_size", 151936, where),
    hiddenSize: hidden,
    intermediateSize: int(c, "intermediate_size", 22016, where),
    numHiddenLayers: int(c, "num_hidden_layers", 32, where),
    numAttentionHeads: heads,
    numKeyValueHeads: kv,
    headDim,
    hiddenAct: "silu",
    maxPositionEmbeddings: int(c, "max_position_embeddings", 32768, where),
    rmsNormEps: num(c, "rms_norm_eps", 1e-6, where),
    ropeTheta: num(c, "rope_theta", 10000, where),
    tieWordEmbeddings: (c.tie_word_embeddings ?? false) === true,
    bosTokenId: optInt(c, "bos_token_id"),
    eosTokenId: Array.isArray(c.eos_token_id)
      ? c.eos_token_id as number[]
      : optInt(c, "eos_token_id"),
    padTokenId: optInt(c, "pad_token_id"),
    torchDtype: c.torch_dtype as string | undefined,
  };
}

/** Parse a projector_config block (original names, plus ours for the LayerNorm variant). */
export function parseProjectorConfig(
  c: Json,
  vision: SiglipVisionConfig,
  text: Qwen2Config,
  where = "projector_config",
): ProjectorConfig {
  const f = c.vision_pixel_shuffle_factor ?? c.pixel_shuffle_factor ?? 2;
  if (f !== "auto" && !(typeof f === "number" && Number.isInteger(f) && f >= 1)) {
    throw new Error(
      `${where}: pixel shuffle factor ${JSON.stringify(f)} must be a positive integer or "auto"`,
    );
  }
  const vh = int(c, "vision_hidden_size", vision.hiddenSize, where);
  const th = int(c, "text_hidden_size", text.hiddenSize, where);
  if (vh !== vision.hiddenSize || th !== text.hiddenSize) {
    throw new Error(
      `${where}: vision/text hidden sizes ${vh}/${th} disagree with the tower configs ` +
        `(${vision.hiddenSize}/${text.hiddenSize})`,
    );
  }
  return {
    factor: f as number | "auto",
    visionHiddenSize: vh,
    textHiddenSize: th,
    layerNorm: (c.use_layernorm ?? c.layer_norm ?? false) === true,
    layerNormEps: num(c, "layernorm_eps", 1e-5, where),
  };
}

/** Parse a SiQ-VL config.json (model_type "siq_vl"). */
export function parseSiqvlConfig(json: Json, where = "config.json"): SiqvlConfig {
  if (json.model_type !== "siq_vl") {
    throw new Error(`${where}: model_type ${JSON.stringify(json.model_type)} is not "siq_vl"`);
  }
  for (const k of ["vision_config", "text_config"]) {
    if (!json[k] || typeof json[k] !== "object") {
      throw new Error(`${where}: "${k}" is missing (a SiQ-VL config nests the tower configs)`);
    }
  }
  const vc = { model_type: "siglip_vision_model", ...(json.vision_config as Json) };
  const vision = parseSiglipVisionConfig(vc, `${where} vision_config`);
  const tc = { model_type: "qwen2", ...(json.text_config as Json) };
  const text = parseQwen2Config(tc, `${where} text_config`);
  const projector = parseProjectorConfig(
    (json.projector_config ?? {}) as Json,
    vision,
    text,
    `${where} projector_config`,
  );
  return {
    modelType: "siq_vl",
    vision,
    text,
    projector,
    imageTokenId: int(json, "image_token_index", 151655, where),
    visionStartTokenId: int(json, "vision_start_token_index", 151652, where),
    visionEndTokenId: int(json, "vision_end_token_index", 151653, where),
    ignoreIndex: num(json, "ignore_token_index", -100, where),
  };
}

/** Back to HF JSON: a SiglipVisionConfig. */
export function siglipVisionConfigJson(c: SiglipVisionConfig): Json {
  return {
    model_type: "siglip_vision_model",
    architectures: ["SiglipVisionModel"],
    hidden_size: c.hiddenSize,
    intermediate_size: c.intermediateSize,
    num_hidden_layers: c.numHiddenLayers,
    num_attention_heads: c.numAttentionHeads,
    num_channels: c.numChannels,
    image_size: c.imageSize,
    patch_size: c.patchSize,
    hidden_act: c.hiddenAct,
    layer_norm_eps: c.layerNormEps,
    attention_dropout: 0,
    ...(c.torchDtype ? { torch_dtype: c.torchDtype } : {}),
  };
}

/** Back to HF JSON: a Qwen2Config. */
export function qwen2ConfigJson(c: Qwen2Config): Json {
  return {
    model_type: "qwen2",
    architectures: ["Qwen2ForCausalLM"],
    vocab_size: c.vocabSize,
    hidden_size: c.hiddenSize,
    intermediate_size: c.intermediateSize,
    num_hidden_layers: c.numHiddenLayers,
    num_attention_heads: c.numAttentionHeads,
    num_key_value_heads: c.numKeyValueHeads,
    hidden_act: c.hiddenAct,
    max_position_embeddings: c.maxPositionEmbeddings,
    rms_norm_eps: c.rmsNormEps,
    rope_theta: c.ropeTheta,
    rope_scaling: null,
    use_sliding_window: false,
    attention_dropout: 0,
    tie_word_embeddings: c.tieWordEmbeddings,
    ...(c.headDim !== c.hiddenSize / c.numAttentionHeads ? { head_dim: c.headDim } : {}),
    ...(c.bosTokenId !== undefined ? { bos_token_id: c.bosTokenId } : {}),
    ...(c.eosTokenId !== undefined ? { eos_token_id: c.eosTokenId } : {}),
    ...(c.padTokenId !== undefined ? { pad_token_id: c.padTokenId } : {}),
    ...(c.torchDtype ? { torch_dtype: c.torchDtype } : {}),
  };
}

/** Back to JSON: a SiQ-VL config.json (the original SiQ_VLConfig layout, plus our fields). */
export function siqvlConfigJson(c: SiqvlConfig): Json {
  return {
    model_type: "siq_vl",
    architectures: ["SiQ_VLForCausalLM"],
    vision_config: siglipVisionConfigJson(c.vision),
    text_config: qwen2ConfigJson(c.text),
    projector_config: {
      vision_pixel_shuffle_factor: c.projector.factor,
      vision_hidden_size: c.projector.visionHiddenSize,
      text_hidden_size: c.projector.textHiddenSize,
      hidden_act: "silu",
      use_layernorm: c.projector.layerNorm,
      layernorm_eps: c.projector.layerNormEps,
    },
    ignore_token_index: c.ignoreIndex,
    image_token_index: c.imageTokenId,
    vision_start_token_index: c.visionStartTokenId,
    vision_end_token_index: c.visionEndTokenId,
  };
}
