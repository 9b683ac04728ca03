// Chunked prefill of a group of prompts (newcomers to a continuous batch), so that long (image)
// prompts are interleaved with the decode steps of running sequences instead of stalling them,
// and several newcomers share one forward.
//
//   prompts left-padded to T → embeds [B, T, H] (images fused, computed on the first chunk)
//   → chunks of ≤ C positions, each a forward over all B rows with a KVCache [B, T]
//     (qOffset = slots written so far, RoPE positions counting real tokens only, the key mask
//     hiding the padding); the last chunk also returns the logits of position T − 1 of each row.
// Row i's real slots are [T − len_i, T); BatchKV.join copies exactly those.

import type { SiqvlModel } from "../models/siqvl.ts";
import { gatherRows, keep, noGrad, Tensor, tidy } from "../tensor/mod.ts";
import { KVCache } from "./kv_cache.ts";
import { assertFiniteLogits } from "./finite_logits.ts";

/** Prompts being prefilled together, chunk by chunk. */
export class PrefillJob {
  readonly cache: KVCache;
  /** Padded length T. */
  readonly length: number;
  readonly #ids: Int32Array;
  readonly #pos: Int32Array;
  readonly #mask: Int32Array;
  #embeds: Tensor | null = null;
  #done = 0;

  /**
   * `pixels`: f32 [I, C, S, S], the images of all prompts in the order of their placeholders
   * (row by row; owned by the caller). `pad` fills the left padding.
   */
  constructor(
    readonly model: SiqvlModel,
    readonly prompts: readonly (readonly number[])[],
    readonly pixels: Tensor | undefined,
    pad: number,
  ) {
    const b = prompts.length;
    if (b === 0 || prompts.some((p) => p.length === 0)) throw new Error("prefill: empty prompt");
    const t = Math.max(...prompts.map((p) => p.length));
    this.length = t;
    this.#ids = new Int32Array(b * t).fill(pad);
    this.#pos = new Int32Array(b * t);
    this.#mask = new Int32Array(b * t).fill(1);
    prompts.forEach((p, i) => {
      const padN = t - p.length;
      this.#ids.set(p, i * t + padN);
      this.#mask.fill(0, i * t, i * t + padN);
      for (let j = padN; j < t; j++) this.#pos[i * t + j] = j - padN;
    });
    const c = model.config.text;
    this.cache = new KVCache(model.gpu, c.numHiddenLayers, b, t, c.numKeyValueHeads, c.headDim);
  }

  /** Padded positions left. */
  get remaining(): number {
    return this.length - this.#done;
  }

  /** Left padding of row i (its real slots start there). */
  padding(i: number): number {
    return this.length - this.prompts[i].length;
  }

  /**
   * Run the next ≤ `chunk` positions of every row. Returns the last position's logits [B, V]
   * (CPU) when the prompts are complete, else null.
   */
  async step(chunk: number): Promise<Float32Array | null> {
    const model = this.model, gpu = model.gpu, t = this.length, b = this.prompts.length;
    if (this.remaining === 0) throw new Error("prefill: already complete");
    this.#embeds ??= keep(noGrad(() => model.embedInputs(this.#ids, b, t, this.pixels)));
    const c0 = this.#done, c1 = Math.min(t, c0 + Math.max(1, chunk)), n = c1 - c0;
    const last = c1 === t;
    const embeds = this.#embeds;
    const out = noGrad(() =>
      tidy(() => {
        const h = model.config.text.hiddenSize;
        // Rows i·T + c0 .. i·T + c1 − 1 of the flattened [B·T] layout.
        const rows = Int32Array.from(
          { length: b * n },
          (_, k) => Math.floor(k / n) * t + c0 + k % n,
        );
        const part = n === t ? embeds : gatherRows(
          embeds.view([b * t, h]),
          Tensor.from(gpu, rows, [rows.length], "i32"),
        ).view([b, n, h]);
        const positions = Tensor.from(gpu, rows.map((r) => this.#pos[r]), [b, n], "i32");
        const keyMask = Tensor.from(gpu, this.#mask, [b, t], "i32");
        const hidden = model.text.forward(part, { positions, keyMask, cache: this.cache });
        if (!last) return null;
        const lastRows = Int32Array.from({ length: b }, (_, i) => i * n + n - 1);
        const final = gatherRows(hidden.view([b * n, h]), Tensor.from(gpu, lastRows, [b], "i32"));
        return model.text.logits(final);
      })
    );
    this.cache.advance(n);
    this.#done = c1;
    if (!out) return null;
    this.#embeds.dispose();
    this.#embeds = null;
    const logits = await out.readF32();
    out.dispose();
    assertFiniteLogits(logits, {
      phase: "prefill",
      vocab: logits.length / b,
      withImage: !!this.pixels,
    });
    return logits;
  }

  /** Release the cache (after its slots were copied) and any pending embeddings. */
  dispose(): void {
    this.#embeds?.dispose();
    this.#embeds = null;
    this.cache.dispose();
  }
}
