// SiQ-VL: SigLIP vision tower → pixel-shuffle projector → Qwen2 language model.
//
//   images [I, C, S, S] → vision → [I, s², Dv] → projector → [I, n, Dt]
//   ids [B, T] → embed → [B, T, Dt]; the k-th <|image_pad|> (row-major over B, T) gets image row k
//   → Qwen2 → hidden [B, T, Dt] → loss (HF shift: position t predicts labels[t + 1]) or logits
//
// State-dict names follow the original project's current (V3) layout: "vision_model.vision_model.*",
// "text_model.model.*", "text_model.lm_head.weight" (untied only) and "projector.proj.weight" /
// "projector.norm.*" (written as "projector.mlp.weight" in checkpoints, see checkpoint.ts).

import { shiftLabels } from "../data/collator.ts";
import { gatherRows, noGrad, scatterRows, Tensor, tidy, tuning } from "../tensor/mod.ts";
import type { Gpu } from "../gpu/device.ts";
import { Module } from "../nn/module.ts";
import { nextDropoutStep } from "../nn/dropout.ts";
import type { SiqvlConfig } from "./configs.ts";
import { Projector } from "./projector.ts";
import { type LmContext, Qwen2ForCausalLM, sequentialPositions } from "./qwen2.ts";
import { SiglipVisionModel, type Tap } from "./siglip.ts";

/** One batch of token rows (row-major [B, T] CPU arrays) and their images. */
export interface SiqvlInputs {
  /** Token ids, [B, T]. */
  inputIds: Int32Array | number[];
  batch: number;
  seqLen: number;
  /** 1 = real token, 0 = padding, [B, T]; omitted = all ones. */
  attentionMask?: Int32Array | number[];
  /** Unshifted labels (−100 = ignored), [B, T]; the loss is computed when present. */
  labels?: Int32Array | number[];
  /** Images (or tiles) in the order their <|image_pad|> runs appear: f32 [I, C, S, S]. */
  pixelValues?: Tensor;
  /** RoPE positions [B, T] (default 0..T−1 in every row, as HF training does). */
  positions?: Int32Array | number[];
  /**
   * The image each <|image_pad|> run takes (default: run k takes image k). Rows that repeat an
   * image (a preference pair, a group of sampled completions) then share its features: the
   * vision tower and projector run once per image.
   */
  imageIndex?: ArrayLike<number>;
}

/** What a forward pass returns (all tensors owned by the caller). */
export interface SiqvlOutput {
  /** Final hidden states (after model.norm), [B, T, Dt]. */
  hidden: Tensor;
  /** Mean cross-entropy over the counted shifted targets, [] (when labels were given). */
  loss?: Tensor;
  /** Number of targets the loss averages over. */
  numLossTokens: number;
}

/** The whole vision-language model. */
export class SiqvlModel extends Module {
  readonly vision: SiglipVisionModel;
  readonly projector: Projector;
  readonly text: Qwen2ForCausalLM;

  constructor(readonly gpu: Gpu, readonly config: SiqvlConfig) {
    super();
    this.vision = this.child("vision_model", new SiglipVisionModel(config.vision));
    this.projector = this.child("projector", new Projector(config.projector, this.vision.gridSize));
    this.text = this.child("text_model", new Qwen2ForCausalLM(config.text));
  }

  /** Image tokens each image (tile) contributes. */
  get imageTokensPerImage(): number {
    return this.projector.tokensPerImage;
  }

  /**
   * pixels [I, C, S, S] → projected image tokens [I, n, Dt]. A frozen vision tower runs without
   * recording the tape.
   */
  imageFeatures(pixels: Tensor, tap?: Tap): Tensor {
    const frozen = this.vision.trainableParameters().length === 0;
    const feats = frozen
      ? noGrad(() => this.vision.forward(pixels, tap))
      : this.vision.forward(pixels, tap);
    tap?.("vision.last_hidden_state", feats);
    const out = this.projector.forward(feats, tap);
    feats.dispose();
    tap?.("projector.output", out);
    return out;
  }

  /**
   * Token embeddings with the image tokens written into the <|image_pad|> positions:
   * ids [B, T] (+ images) → [B, T, Dt].
   */
  embedInputs(
    ids: ArrayLike<number>,
    b: number,
    t: number,
    pixelValues?: Tensor,
    tap?: Tap,
    imageIndex?: ArrayLike<number>,
  ): Tensor {
    if (ids.length !== b * t) throw new Error(`input_ids has ${ids.length} ids, not ${b}×${t}`);
    const imageId = this.config.imageTokenId, vocab = this.config.text.vocabSize;
    const slots: number[] = [];
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (id === imageId) slots.push(i);
      else if (!(Number.isInteger(id) && id >= 0 && id < vocab)) {
        const where = `input_ids[${Math.floor(i / t)}][${i % t}]`;
        throw new Error(`${where} = ${id} is outside the vocabulary [0, ${vocab})`);
      }
    }
    const n = this.imageTokensPerImage;
    const images = pixelValues ? pixelValues.shape[0] : 0;
    const runs = imageIndex ? imageIndex.length : images;
    if (
      imageIndex && Array.prototype.some.call(imageIndex, (k: number) => !(k >= 0 && k < images))
    ) {
      throw new Error(`imageIndex must name images in [0, ${images})`);
    }
    if (slots.length !== runs * n) {
      throw new Error(
        `image token count mismatch: input_ids contain ${slots.length} <|image_pad|> ` +
          `(id ${imageId}) tokens, but the ${runs} image(s) produce ${runs * n} image ` +
          `tokens (${n} per image)`,
      );
    }
    return tidy(() => {
      const idT = Tensor.from(this.gpu, ids, [b, t], "i32");
      const emb = this.text.embed(idT); // [B, T, Dt]
      if (slots.length === 0) return emb;
      const feats = this.imageFeatures(pixelValues!, tap); // [I, n, Dt]
      const d = this.config.text.hiddenSize;
      const idx = Tensor.from(this.gpu, Int32Array.from(slots), [slots.length], "i32");
      let rows = feats.reshape([images * n, d]);
      if (imageIndex) {
        const src = Int32Array.from(
          { length: slots.length },
          (_, k) => imageIndex[Math.floor(k / n)] * n + (k % n),
        );
        rows = gatherRows(rows, Tensor.from(this.gpu, src, [src.length], "i32"));
      }
      const fused = scatterRows(emb.reshape([b * t, d]), idx, rows);
      return fused.reshape([b, t, d]);
    });
  }

  /** Forward pass (and loss when labels are given). */
  forward(inputs: SiqvlInputs, tap?: Tap): SiqvlOutput {
    const { batch: b, seqLen: t } = inputs;
    if (this.training) nextDropoutStep();
    return tidy(() => {
      const embeds = this.embedInputs(
        inputs.inputIds,
        b,
        t,
        inputs.pixelValues,
        tap,
        inputs.imageIndex,
      );
      tap?.("fused.inputs_embeds", embeds);
      const ctx: LmContext = {
        positions: inputs.positions
          ? Tensor.from(this.gpu, inputs.positions, [b, t], "i32")
          : sequentialPositions(this.gpu, b, t),
        tap,
      };
      const m = inputs.attentionMask;
      if (m && Array.prototype.some.call(m, (v: number) => v === 0)) {
        ctx.keyMask = Tensor.from(this.gpu, m, [b, t], "i32");
      }
      const hidden = this.text.forward(embeds, ctx);
      if (!inputs.labels) return { hidden, numLossTokens: 0 };
      const { targets, count } = shiftLabels(inputs.labels, b, t, this.config.ignoreIndex);
      // Only positions with a target reach the vocabulary head (same mean CE, less work).
      const rows = targets.reduce<number[]>((r, y, i) => {
        if (y !== this.config.ignoreIndex) r.push(i);
        return r;
      }, []);
      const d = hidden.shape[hidden.ndim - 1];
      const part = tuning.compactLossRows && rows.length > 0 && rows.length < b * t;
      const hRows = part
        ? gatherRows(hidden.reshape([b * t, d]), Tensor.from(this.gpu, rows, [rows.length], "i32"))
        : hidden;
      const tgt = part ? Int32Array.from(rows, (i) => targets[i]) : targets;
      const tt = Tensor.from(this.gpu, tgt, [tgt.length], "i32");
      const loss = this.text.loss(hRows, tt);
      return { hidden, loss, numLossTokens: count };
    });
  }

  /** hidden [..., Dt] → logits [..., V]. */
  logits(hidden: Tensor): Tensor {
    return this.text.logits(hidden);
  }
}
