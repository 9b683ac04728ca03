// SigLIP vision tower (HF SiglipVisionModel), fixed resolution.
//
//   pixels [B, C, S, S] → patch conv (stride = kernel = P) → + position table → N pre-LN encoder
//   layers (bidirectional MHA, gelu-tanh MLP) → post_layernorm → last_hidden_state [B, N, D]
//
// Parameter names are the checkpoint's ("vision_model.embeddings.patch_embedding.weight", …).
// The MAP pooling head ("vision_model.head.*") is not built: VLMs use last_hidden_state only.

import {
  add,
  attention,
  geluTanh,
  linear,
  patchify,
  record,
  sumRows,
  Tensor,
  tidy,
} from "../tensor/mod.ts";
import { LayerNorm } from "../nn/norm.ts";
import { Linear } from "../nn/linear.ts";
import { Module, ModuleDict } from "../nn/module.ts";
import type { Parameter } from "../nn/parameter.ts";
import type { SiglipVisionConfig } from "./configs.ts";

/** Called with intermediate activations (name, tensor) when given; for parity checks. */
export type Tap = (name: string, t: Tensor) => void;

/** x: [B, N, D] + pos: [N, D] broadcast over B (gradient to pos summed over B). */
function addPositions(x: Tensor, pos: Tensor): Tensor {
  const [b] = x.shape;
  if (b === 1) return add(x, pos.reshape(x.shape));
  // Tile the table B times with buffer copies, then add elementwise.
  const tiled = Tensor.empty(x.gpu, x.shape, "f32");
  for (let i = 0; i < b; i++) {
    x.gpu.copy(pos.storage.buffer, 0, tiled.storage.buffer, i * pos.bytes, pos.bytes);
  }
  const t = record("tilePositions", tiled, [pos], (g) => [sumRows(g, pos.size).view(pos.shape)]);
  const out = add(x, t);
  t.dispose();
  return out;
}

class SiglipAttention extends Module {
  readonly q_proj: Linear;
  readonly k_proj: Linear;
  readonly v_proj: Linear;
  readonly out_proj: Linear;

  constructor(readonly c: SiglipVisionConfig) {
    super();
    const d = c.hiddenSize;
    this.q_proj = this.child("q_proj", new Linear(d, d, true));
    this.k_proj = this.child("k_proj", new Linear(d, d, true));
    this.v_proj = this.child("v_proj", new Linear(d, d, true));
    this.out_proj = this.child("out_proj", new Linear(d, d, true));
  }

  /** x: [B, N, D] → [B, N, D]. */
  forward(x: Tensor): Tensor {
    const [b, n, d] = x.shape;
    const h = this.c.numAttentionHeads, hd = d / h;
    const split = (t: Tensor) => t.reshape([b, n, h, hd]);
    const q = split(this.q_proj.forward(x));
    const k = split(this.k_proj.forward(x));
    const v = split(this.v_proj.forward(x));
    const o = attention(q, k, v, { causal: false }); // [B, N, H, hd]
    return this.out_proj.forward(o.reshape([b, n, d]));
  }
}

class SiglipMLP extends Module {
  readonly fc1: Linear;
  readonly fc2: Linear;

  constructor(c: SiglipVisionConfig) {
    super();
    this.fc1 = this.child("fc1", new Linear(c.hiddenSize, c.intermediateSize, true));
    this.fc2 = this.child("fc2", new Linear(c.intermediateSize, c.hiddenSize, true));
  }

  /** x: [B, N, D] → [B, N, D]. */
  forward(x: Tensor): Tensor {
    return this.fc2.forward(geluTanh(this.fc1.forward(x)));
  }
}

class SiglipEncoderLayer extends Module {
  readonly layer_norm1: LayerNorm;
  readonly self_attn: SiglipAttention;
  readonly layer_norm2: LayerNorm;
  readonly mlp: SiglipMLP;

  constructor(c: SiglipVisionConfig) {
    super();
    this.layer_norm1 = this.child("layer_norm1", new LayerNorm(c.hiddenSize, c.layerNormEps));
    this.self_attn = this.child("self_attn", new SiglipAttention(c));
    this.layer_norm2 = this.child("layer_norm2", new LayerNorm(c.hiddenSize, c.layerNormEps));
    this.mlp = this.child("mlp", new SiglipMLP(c));
  }

  /** Pre-LN block, x: [B, N, D] → [B, N, D]. */
  forward(x: Tensor): Tensor {
    const h = add(x, this.self_attn.forward(this.layer_norm1.forward(x)));
    return add(h, this.mlp.forward(this.layer_norm2.forward(h)));
  }
}

class SiglipEmbeddings extends Module {
  readonly patchWeight: Parameter;
  readonly patchBias: Parameter;
  readonly position: Parameter;

  constructor(readonly c: SiglipVisionConfig) {
    super();
    const d = c.hiddenSize, p = c.patchSize;
    const n = (c.imageSize / p) ** 2;
    if (!Number.isInteger(n)) {
      throw new Error(`SigLIP: image_size ${c.imageSize} is not a multiple of patch_size ${p}`);
    }
    this.patchWeight = this.param("patch_embedding.weight", [d, c.numChannels, p, p], "matrix", {
      kind: "normal",
      std: 0.02,
    });
    this.patchBias = this.param("patch_embedding.bias", [d], "vector", {
      kind: "constant",
      value: 0,
    });
    this.position = this.param("position_embedding.weight", [n, d], "vector", {
      kind: "normal",
      std: 0.02,
    });
  }

  /** pixels: [B, C, S, S] → [B, N, D]. */
  forward(pixels: Tensor): Tensor {
    const c = this.c, p = c.patchSize;
    if (
      pixels.ndim !== 4 || pixels.shape[1] !== c.numChannels || pixels.shape[2] !== c.imageSize ||
      pixels.shape[3] !== c.imageSize
    ) {
      throw new Error(
        `SigLIP: pixel_values ${pixels.describe()} do not match the config ` +
          `[B, ${c.numChannels}, ${c.imageSize}, ${c.imageSize}]`,
      );
    }
    const patches = patchify(pixels, p); // [B, N, C·P·P]
    const w2 = this.patchWeight.value.reshape([c.hiddenSize, c.numChannels * p * p]);
    const x = linear(patches, w2, this.patchBias.value); // [B, N, D]
    return addPositions(x, this.position.value);
  }
}

/** SigLIP vision transformer: pixels → last_hidden_state (after post_layernorm). */
export class SiglipVisionModel extends Module {
  readonly embeddings: SiglipEmbeddings;
  readonly layers: SiglipEncoderLayer[] = [];
  readonly post_layernorm: LayerNorm;

  constructor(readonly config: SiglipVisionConfig) {
    super();
    // HF layout: everything lives under "vision_model." (SiglipVisionModel wraps the transformer).
    const root = this.child("vision_model", new ModuleDict());
    this.embeddings = root.add("embeddings", new SiglipEmbeddings(config));
    const layers = root.add("encoder", new ModuleDict()).add("layers", new ModuleDict());
    for (let i = 0; i < config.numHiddenLayers; i++) {
      this.layers.push(layers.add(String(i), new SiglipEncoderLayer(config)));
    }
    this.post_layernorm = root.add(
      "post_layernorm",
      new LayerNorm(config.hiddenSize, config.layerNormEps),
    );
  }

  /** Patches along one side of the image. */
  get gridSize(): number {
    return this.config.imageSize / this.config.patchSize;
  }

  /** pixels: [B, C, S, S] f32 → last_hidden_state [B, (S/P)², D]. */
  forward(pixels: Tensor, tap?: Tap): Tensor {
    let x = tidy(() => this.embeddings.forward(pixels));
    tap?.("vision.embeddings", x);
    this.layers.forEach((layer, i) => {
      const prev = x;
      x = tidy(() => layer.forward(prev));
      prev.dispose();
      tap?.(`vision.layer_output.${i}`, x);
    });
    const out = tidy(() => this.post_layernorm.forward(x));
    x.dispose();
    return out;
  }
}
