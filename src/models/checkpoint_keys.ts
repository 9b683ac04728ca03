// The one place that knows the original SiQ-VL checkpoint layouts and maps their keys onto
// SiqvlModel's parameter names ("canonical" names):
//
//   canonical (ours)                     V3 (HEAD) / our files              V1
//   vision_model.vision_model.<siglip>   vision_model.vision_model.<siglip> vision_tower.<siglip>
//   projector.proj.weight                projector.mlp.weight               projector.proj.weight
//   projector.norm.{weight,bias}         projector.norm.*  (ours only)      projector.norm.*
//   text_model.model.<qwen2>             text_model.model.<qwen2>          llm.model.<qwen2>
//   text_model.lm_head.weight            text_model.lm_head.weight         llm.lm_head.weight
//
// PEFT-wrapped language models (a checkpoint saved while LoRA was attached) store
//   text_model.base_model.model.<qwen2 key>                     (non-target weights)
//   text_model.base_model.model.<module>.base_layer.{weight,bias} (target base weights)
//   text_model.base_model.model.<module>.lora_{A,B}[.default].weight
// (V1: the same under "llm."). The SigLIP pooling head (".head.*") and rotary / position-id
// buffers are ignored.

/** Which generation of the original project wrote a checkpoint. */
export type CheckpointLayout = "v3" | "v1";

/** Where each canonical parameter and each LoRA matrix lives in a checkpoint. */
export interface CheckpointKeyMap {
  layout: CheckpointLayout;
  /** canonical parameter name → stored key. */
  params: Map<string, string>;
  /** Qwen2 module path ("model.layers.0.self_attn.q_proj") → stored keys of lora_A / lora_B. */
  lora: Map<string, { A?: string; B?: string }>;
  /** Keys deliberately skipped (pooling head, buffers, an aliased tied head). */
  ignored: string[];
  /** Keys no rule understood. */
  unknown: string[];
}

const IGNORED = [/^vision_model\.vision_model\.head\./, /\.rotary_emb\.inv_freq$/, /position_ids$/];

/** Detect the layout of a SiQ-VL checkpoint from its keys. */
export function detectLayout(keys: readonly string[]): CheckpointLayout {
  const v1 = keys.some((k) => k.startsWith("vision_tower.") || k.startsWith("llm."));
  const v3 = keys.some((k) => k.startsWith("vision_model.") || k.startsWith("text_model."));
  if (keys.some((k) => /^projector\.(gate|up|down)_proj\./.test(k))) {
    throw new Error(
      "this checkpoint has the V2 gated-MLP projector (projector.gate_proj/up_proj/down_proj), " +
        "which siqvl does not implement (supported: V1 Linear+LayerNorm, V3 single Linear)",
    );
  }
  if (v1 && v3) {
    throw new Error(
      "checkpoint mixes V1 (vision_tower./llm.) and V3 (vision_model./text_model.) keys",
    );
  }
  if (v1) return "v1";
  if (v3) return "v3";
  throw new Error(
    "not a SiQ-VL checkpoint: no vision_model./text_model. (V3) or vision_tower./llm. (V1) keys",
  );
}

// Qwen2 part of a key below the language-model prefix, PEFT wrapping undone.
function mapText(rest: string, out: CheckpointKeyMap, key: string): void {
  let r = rest;
  if (r.startsWith("base_model.model.")) r = r.slice("base_model.model.".length);
  const lora = /^(.*)\.lora_([AB])(?:\.[^.]+)?\.weight$/.exec(r);
  if (lora) {
    const e = out.lora.get(lora[1]) ?? {};
    e[lora[2] as "A" | "B"] = key;
    out.lora.set(lora[1], e);
    return;
  }
  if (/\.lora_(embedding_)?[AB]\b|\.lora_magnitude_vector\b/.test(r)) {
    out.unknown.push(key);
    return;
  }
  r = r.replace(".base_layer.", ".");
  out.params.set(`text_model.${r}`, key);
}

/** Map every key of a checkpoint onto canonical names. */
export function mapCheckpointKeys(keys: readonly string[]): CheckpointKeyMap {
  const layout = detectLayout(keys);
  const out: CheckpointKeyMap = {
    layout,
    params: new Map(),
    lora: new Map(),
    ignored: [],
    unknown: [],
  };
  for (const key of keys) {
    let canon: string | null = null;
    if (layout === "v3") {
      if (key.startsWith("vision_model.vision_model.")) canon = key;
      else if (key.startsWith("text_model.")) {
        mapText(key.slice("text_model.".length), out, key);
        continue;
      } else if (key === "projector.mlp.weight" || key === "projector.proj.weight") {
        canon = "projector.proj.weight";
      } else if (/^projector\.norm\.(weight|bias)$/.test(key)) canon = key;
    } else {
      if (key.startsWith("vision_tower.")) {
        const rest = key.slice("vision_tower.".length);
        canon = rest.startsWith("vision_model.")
          ? `vision_model.${rest}`
          : `vision_model.vision_model.${rest}`;
      } else if (key.startsWith("llm.")) {
        mapText(key.slice("llm.".length), out, key);
        continue;
      } else if (/^projector\.(proj\.weight|norm\.(weight|bias))$/.test(key)) canon = key;
    }
    if (canon === null) out.unknown.push(key);
    else if (IGNORED.some((re) => re.test(canon!))) out.ignored.push(key);
    else out.params.set(canon, key);
  }
  // Ignore buffers that surfaced through the text mapping.
  for (const [canon, key] of [...out.params]) {
    if (IGNORED.some((re) => re.test(canon))) {
      out.params.delete(canon);
      out.ignored.push(key);
    }
  }
  return out;
}

/** The key a canonical parameter is written under in our (V3-compatible) files. */
export function savedKey(canonical: string): string {
  return canonical === "projector.proj.weight" ? "projector.mlp.weight" : canonical;
}
