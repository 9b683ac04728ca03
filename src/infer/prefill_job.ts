// Chunked prefill of one prompt, so that a long (image) prompt can be interleaved with the
// decode steps of running sequences instead of stalling them.
//
//   embeds [1, T, H] (images fused, computed on the first chunk) → chunks of ≤ C positions, each a
//   forward with a one-row KVCache of T slots (qOffset = slots written so far, positions
//   c0..c1−1); the last chunk also returns the logits of position T − 1.

import type { SiqvlModel } from "../models/siqvl.ts";
import { gatherRows, keep, noGrad, Tensor, tidy } from "../tensor/mod.ts";
import { KVCache } from "./kv_cache.ts";

/** A prompt being prefilled chunk by chunk. */
export class PrefillJob {
  readonly cache: KVCache;
  #embeds: Tensor | null = null;
  #done = 0;

  /** `pixels`: f32 [I, C, S, S] for the prompt's I images (owned by the caller). */
  constructor(
    readonly model: SiqvlModel,
    readonly ids: readonly number[],
    readonly pixels?: Tensor,
  ) {
    if (ids.length === 0) throw new Error("prefill: empty prompt");
    const c = model.config.text;
    this.cache = new KVCache(
      model.gpu,
      c.numHiddenLayers,
      1,
      ids.length,
      c.numKeyValueHeads,
      c.headDim,
    );
  }

  /** Positions prefilled so far. */
  get done(): number {
    return this.#done;
  }

  /** Positions left. */
  get remaining(): number {
    return this.ids.length - this.#done;
  }

  /**
   * Run the next ≤ `chunk` positions. Returns the last position's logits [V] (CPU) when the
   * prompt is complete, else null.
   */
  async step(chunk: number): Promise<Float32Array | null> {
    const model = this.model, gpu = model.gpu, t = this.ids.length;
    if (this.remaining === 0) throw new Error("prefill: already complete");
    if (!this.#embeds) {
      this.#embeds = keep(noGrad(() => model.embedInputs(this.ids, 1, t, this.pixels)));
    }
    const c0 = this.#done, c1 = Math.min(t, c0 + Math.max(1, chunk));
    const last = c1 === t;
    const embeds = this.#embeds;
    const out = noGrad(() =>
      tidy(() => {
        const h = model.config.text.hiddenSize;
        const rows = Int32Array.from({ length: c1 - c0 }, (_, i) => c0 + i);
        const part = c0 === 0 && last
          ? embeds
          : gatherRows(embeds.view([t, h]), Tensor.from(gpu, rows, [rows.length], "i32"))
            .view([1, rows.length, h]);
        const positions = Tensor.from(gpu, rows, [1, rows.length], "i32");
        const hidden = model.text.forward(part, { positions, cache: this.cache });
        if (!last) return null;
        const lastRow = Tensor.from(gpu, [rows.length - 1], [1], "i32");
        return model.text.logits(gatherRows(hidden.view([rows.length, h]), lastRow));
      })
    );
    this.cache.advance(c1 - c0);
    this.#done = c1;
    if (!out) return null;
    this.#embeds.dispose();
    this.#embeds = null;
    const logits = await out.readF32();
    out.dispose();
    return logits;
  }

  /** Release the cache (after its slots were copied) and any pending embeddings. */
  dispose(): void {
    this.#embeds?.dispose();
    this.#embeds = null;
    this.cache.dispose();
  }
}
