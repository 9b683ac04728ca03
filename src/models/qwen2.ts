// Qwen2 / Qwen2.5 causal language model (HF Qwen2ForCausalLM), parameter names as in its
// checkpoints ("model.embed_tokens.weight", "model.layers.{i}.self_attn.q_proj.weight", …,
// "lm_head.weight" only when the head is not tied to the embedding).
//
//   h0 = embed[ids]                                    (or fused embeddings from SiQ-VL)
//   per layer: h += o_proj(attn(rope(q), rope(k), v))  on RMSNorm(h), causal, GQA, q/k/v biases
//              h += down(silu(gate(m)) ⊙ up(m))        on m = RMSNorm(h)
//   hidden = RMSNorm(h); logits = hidden · lm_headᵀ

import {
  add,
  attention,
  checkpoint,
  linear,
  linearCrossEntropy,
  rope,
  siluMul,
  Tensor,
  tidy,
} from "../tensor/mod.ts";
import { Embedding } from "../nn/embedding.ts";
import { Linear } from "../nn/linear.ts";
import {
  injectLora,
  loraLinears,
  loraParameters,
  type LoraSpec,
  type LoraTargets,
  mergeLora,
  setLoraEnabled,
} from "../nn/lora.ts";
import { Module, ModuleDict } from "../nn/module.ts";
import { RMSNorm } from "../nn/norm.ts";
import type { Parameter } from "../nn/parameter.ts";
import type { Gpu } from "../gpu/device.ts";
import type { Qwen2Config } from "./configs.ts";
import type { Tap } from "./siglip.ts";

/** The seven projections LoRA may target. */
export const LORA_TARGETS = [
  "q_proj",
  "k_proj",
  "v_proj",
  "o_proj",
  "gate_proj",
  "up_proj",
  "down_proj",
] as const;
export type LoraTarget = typeof LORA_TARGETS[number];

/**
 * Key/value storage for incremental decoding. `append` stores this call's keys and values
 * ([B, T, Hkv, D], after RoPE) for `layer` and returns the tensors attention should read (every
 * slot so far, [B, S, Hkv, D]) and the slot of the call's first query.
 */
export interface KVStore {
  append(layer: number, k: Tensor, v: Tensor): { k: Tensor; v: Tensor; qOffset: number };
}

/** Per-call inputs shared by every layer. */
export interface LmContext {
  /** RoPE positions, i32 [B, T]. */
  positions: Tensor;
  /** 1 = key may be attended, i32 [B, S] (S = T, or the cache's capacity); omit for all ones. */
  keyMask?: Tensor;
  /** Incremental decoding cache. */
  cache?: KVStore;
  /** Intermediate activations ("lm.layer_output.{i}", "lm.final_norm_output"). */
  tap?: Tap;
}

class Qwen2Attention extends Module {
  readonly q_proj: Linear;
  readonly k_proj: Linear;
  readonly v_proj: Linear;
  readonly o_proj: Linear;

  constructor(readonly c: Qwen2Config, readonly layer: number) {
    super();
    const h = c.hiddenSize, d = c.headDim;
    this.q_proj = this.child("q_proj", new Linear(h, c.numAttentionHeads * d, true));
    this.k_proj = this.child("k_proj", new Linear(h, c.numKeyValueHeads * d, true));
    this.v_proj = this.child("v_proj", new Linear(h, c.numKeyValueHeads * d, true));
    this.o_proj = this.child("o_proj", new Linear(c.numAttentionHeads * d, h, false));
  }

  /** x: [B, T, H] → [B, T, H]. */
  forward(x: Tensor, ctx: LmContext): Tensor {
    const c = this.c;
    const [b, t] = x.shape;
    const hq = c.numAttentionHeads, hkv = c.numKeyValueHeads, d = c.headDim;
    const q = rope(this.q_proj.forward(x).reshape([b, t, hq, d]), ctx.positions, c.ropeTheta);
    let k = rope(this.k_proj.forward(x).reshape([b, t, hkv, d]), ctx.positions, c.ropeTheta);
    let v = this.v_proj.forward(x).reshape([b, t, hkv, d]);
    let qOffset = 0;
    if (ctx.cache) ({ k, v, qOffset } = ctx.cache.append(this.layer, k, v));
    const o = attention(q, k, v, { causal: true, keyMask: ctx.keyMask, qOffset });
    return this.o_proj.forward(o.reshape([b, t, hq * d]));
  }
}

class Qwen2MLP extends Module {
  readonly gate_proj: Linear;
  readonly up_proj: Linear;
  readonly down_proj: Linear;

  constructor(c: Qwen2Config) {
    super();
    this.gate_proj = this.child("gate_proj", new Linear(c.hiddenSize, c.intermediateSize, false));
    this.up_proj = this.child("up_proj", new Linear(c.hiddenSize, c.intermediateSize, false));
    this.down_proj = this.child("down_proj", new Linear(c.intermediateSize, c.hiddenSize, false));
  }

  /** x: [B, T, H] → [B, T, H]. */
  forward(x: Tensor): Tensor {
    return this.down_proj.forward(siluMul(this.gate_proj.forward(x), this.up_proj.forward(x)));
  }
}

class Qwen2DecoderLayer extends Module {
  readonly input_layernorm: RMSNorm;
  readonly self_attn: Qwen2Attention;
  readonly post_attention_layernorm: RMSNorm;
  readonly mlp: Qwen2MLP;

  constructor(c: Qwen2Config, layer: number) {
    super();
    this.input_layernorm = this.child("input_layernorm", new RMSNorm(c.hiddenSize, c.rmsNormEps));
    this.self_attn = this.child("self_attn", new Qwen2Attention(c, layer));
    this.post_attention_layernorm = this.child(
      "post_attention_layernorm",
      new RMSNorm(c.hiddenSize, c.rmsNormEps),
    );
    this.mlp = this.child("mlp", new Qwen2MLP(c));
  }

  /** h: [B, T, H] → [B, T, H]. */
  forward(h: Tensor, ctx: LmContext): Tensor {
    const a = add(h, this.self_attn.forward(this.input_layernorm.forward(h), ctx));
    return add(a, this.mlp.forward(this.post_attention_layernorm.forward(a)));
  }

  /** The seven projections by name. */
  projections(): Record<LoraTarget, Linear> {
    const { q_proj, k_proj, v_proj, o_proj } = this.self_attn;
    const { gate_proj, up_proj, down_proj } = this.mlp;
    return { q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj };
  }
}

/** Qwen2 with its language-model head. */
export class Qwen2ForCausalLM extends Module {
  readonly embed_tokens: Embedding;
  readonly layers: Qwen2DecoderLayer[] = [];
  readonly norm: RMSNorm;
  /** The untied head; null when tied to embed_tokens. */
  readonly lm_head: Linear | null;
  /** Re-run each decoder layer during backward instead of keeping its activations. */
  gradientCheckpointing = false;

  constructor(readonly config: Qwen2Config) {
    super();
    const c = config;
    const model = this.child("model", new ModuleDict());
    this.embed_tokens = model.add("embed_tokens", new Embedding(c.vocabSize, c.hiddenSize));
    const layers = model.add("layers", new ModuleDict());
    for (let i = 0; i < c.numHiddenLayers; i++) {
      this.layers.push(layers.add(String(i), new Qwen2DecoderLayer(c, i)));
    }
    this.norm = model.add("norm", new RMSNorm(c.hiddenSize, c.rmsNormEps));
    this.lm_head = c.tieWordEmbeddings
      ? null
      : this.child("lm_head", new Linear(c.hiddenSize, c.vocabSize, false));
  }

  /** The output projection [V, H] (the embedding table when tied). */
  get lmHead(): Tensor {
    return (this.lm_head ? this.lm_head.weight : this.embed_tokens.weight).value;
  }

  /** ids: i32 [B, T] → embeddings [B, T, H]. */
  embed(ids: Tensor): Tensor {
    return this.embed_tokens.forward(ids);
  }

  /** embeds: [B, T, H] → final hidden states (after model.norm) [B, T, H]. */
  forward(embeds: Tensor, ctx: LmContext): Tensor {
    let h = embeds;
    this.layers.forEach((layer, i) => {
      const prev = h;
      h = this.gradientCheckpointing && !ctx.cache
        ? checkpointLayer(layer, prev, ctx)
        : tidy(() => layer.forward(prev, ctx));
      if (prev !== embeds) prev.dispose();
      ctx.tap?.(`lm.layer_output.${i}`, h);
    });
    const out = tidy(() => this.norm.forward(h));
    if (h !== embeds) h.dispose();
    ctx.tap?.("lm.final_norm_output", out);
    return out;
  }

  /** hidden: [..., H] → logits [..., V]. */
  logits(hidden: Tensor): Tensor {
    return linear(hidden, this.lmHead);
  }

  /**
   * Mean cross-entropy of `hidden` [B, T, H] against `targets` (i32 [B·T], already shifted;
   * −100 = ignored), without materialising the logits.
   */
  loss(hidden: Tensor, targets: Tensor): Tensor {
    const h = hidden.shape[hidden.ndim - 1];
    return linearCrossEntropy(hidden.reshape([hidden.size / h, h]), this.lmHead, targets);
  }

  /** The decoder layers' projections, for LoRA. */
  projections(layer: number): Record<LoraTarget, Linear> {
    return this.layers[layer].projections();
  }

  /**
   * Attach LoRA adapters (uninitialised until loaded or initialised) to the projections named in
   * `targets` (short names such as "q_proj", checked against {@link LORA_TARGETS}), or to every
   * projection whose module path ("model.layers.3.self_attn.q_proj") the predicate accepts.
   */
  attachLora(spec: LoraSpec, targets: LoraTargets = LORA_TARGETS): void {
    if (typeof targets !== "function") {
      const bad = targets.filter((t) => !(LORA_TARGETS as readonly string[]).includes(t));
      if (bad.length) {
        throw new Error(`LoRA target "${bad[0]}" is not one of ${LORA_TARGETS.join(", ")}`);
      }
    }
    injectLora(this, spec, targets);
  }

  /** Every decoder projection with its module path ("model.layers.0.self_attn.q_proj"). */
  projectionPaths(): [string, Linear][] {
    const out: [string, Linear][] = [];
    this.layers.forEach((layer, i) => {
      for (const [name, lin] of Object.entries(layer.projections())) {
        const group = name === "gate_proj" || name === "up_proj" || name === "down_proj"
          ? "mlp"
          : "self_attn";
        out.push([`model.layers.${i}.${group}.${name}`, lin]);
      }
    });
    return out;
  }

  /** Every Linear that carries a LoRA adapter, with its module path. */
  loraLinears(): [string, Linear][] {
    return loraLinears(this);
  }

  /** The adapters' A and B parameters with their names ("model.layers.0.….lora_A.weight"). */
  loraParameters(): [string, Parameter][] {
    return loraParameters(this);
  }

  /** Switch every adapter on or off (off = the base model). */
  setLoraEnabled(on: boolean): void {
    setLoraEnabled(this, on);
  }

  /** Fold every adapter into its base weight (and remove it). */
  mergeLora(): void {
    mergeLora(this);
  }
}

// Re-run `layer` during backward. The context tensors are passed as checkpoint inputs so their
// storage stays alive until the recompute.
function checkpointLayer(layer: Qwen2DecoderLayer, h: Tensor, ctx: LmContext): Tensor {
  const inputs = ctx.keyMask ? [h, ctx.positions, ctx.keyMask] : [h, ctx.positions];
  return checkpoint(
    (x, positions, keyMask) => layer.forward(x, { positions, keyMask }),
    inputs,
  );
}

/** Positions offset, offset+1, … for each of B rows: i32 [B, T]. */
export function sequentialPositions(gpu: Gpu, b: number, t: number, offset = 0): Tensor {
  const p = new Int32Array(b * t);
  for (let i = 0; i < b; i++) for (let j = 0; j < t; j++) p[i * t + j] = offset + j;
  return Tensor.from(gpu, p, [b, t], "i32");
}
