// A batched KV cache whose rows join and leave between decode steps (continuous batching).
//
//   k[layer], v[layer]: [maxRows, capacity, Hkv, D] f32; rows 0..rows−1 are live, row i holds
//   lens[i] written slots (its prompt and the tokens fed so far, RoPE positions 0..lens[i]−1).
//
// A decode step feeds one token per live row: row i writes slot lens[i] at position lens[i] and
// attends over slots [0, lens[i]] through the key mask (the causal offset is set past every slot,
// so only the mask decides). Rows are kept dense: a leaving row is replaced by the last one, so a
// step over `rows` rows is a forward of batch `rows` on views of the first rows of the buffers.
// Newcomers are prefilled together (prefill_job.ts) and their real slots copied into free rows
// (left padding dropped: keys carry their RoPE positions, so slot order does not matter).

import type { Gpu } from "../gpu/device.ts";
import type { KVStore } from "../models/qwen2.ts";
import type { SiqvlModel } from "../models/siqvl.ts";
import { keep, noGrad, Tensor, tidy, zeros } from "../tensor/mod.ts";
import type { KVCache } from "./kv_cache.ts";
import { assertFiniteLogits } from "./finite_logits.ts";

/** A KV cache of up to `maxRows` independent sequences of different lengths. */
export class BatchKV implements KVStore {
  k: Tensor[] = [];
  v: Tensor[] = [];
  /** Written slots of each live row. */
  readonly lens: number[] = [];
  #scratch: Tensor;

  constructor(
    readonly gpu: Gpu,
    readonly layers: number,
    readonly maxRows: number,
    readonly capacity: number,
    readonly kvHeads: number,
    readonly headDim: number,
  ) {
    const shape = [maxRows, capacity, kvHeads, headDim];
    for (let i = 0; i < layers; i++) {
      this.k.push(keep(zeros(gpu, shape)));
      this.v.push(keep(zeros(gpu, shape)));
    }
    this.#scratch = keep(zeros(gpu, [capacity, kvHeads, headDim]));
  }

  /** Live rows. */
  get rows(): number {
    return this.lens.length;
  }

  /** Bytes of one slot (Hkv · D f32). */
  get slotBytes(): number {
    return this.kvHeads * this.headDim * 4;
  }

  /** Bytes of one row. */
  get rowBytes(): number {
    return this.capacity * this.slotBytes;
  }

  /** Store one step's keys/values [rows, 1, Hkv, D] at slot lens[i] of each row. */
  append(layer: number, k: Tensor, v: Tensor): { k: Tensor; v: Tensor; qOffset: number } {
    const [b, t, h, d] = k.shape;
    if (b !== this.rows || t !== 1 || h !== this.kvHeads || d !== this.headDim) {
      throw new Error(
        `batch KV cache (${this.rows} rows, Hkv ${this.kvHeads}, D ${this.headDim}): cannot ` +
          `store keys ${k.describe()} (one token per live row expected)`,
      );
    }
    const sb = this.slotBytes;
    for (let i = 0; i < b; i++) {
      if (this.lens[i] >= this.capacity) {
        throw new Error(`batch KV cache row ${i} is full (${this.capacity} slots)`);
      }
      const dst = i * this.rowBytes + this.lens[i] * sb;
      this.gpu.copy(k.storage.buffer, i * sb, this.k[layer].storage.buffer, dst, sb);
      this.gpu.copy(v.storage.buffer, i * sb, this.v[layer].storage.buffer, dst, sb);
    }
    const shape = [b, this.capacity, this.kvHeads, this.headDim];
    return {
      k: new Tensor(this.gpu, shape, "f32", this.k[layer].storage),
      v: new Tensor(this.gpu, shape, "f32", this.v[layer].storage),
      qOffset: this.capacity - 1,
    };
  }

  /**
   * Add `copies` rows holding slots [skip, src.length) of row `srcRow` of `src` (a prefilled
   * cache; `skip` = that row's left padding). Returns the new rows' indices.
   */
  join(src: KVCache, srcRow = 0, skip = 0, copies = 1): number[] {
    if (src.kvHeads !== this.kvHeads || src.headDim !== this.headDim || srcRow >= src.batch) {
      throw new Error(`batch KV cache: cannot join row ${srcRow} of a ${src.batch}-row cache`);
    }
    if (this.rows + copies > this.maxRows) {
      throw new Error(`batch KV cache: ${this.rows} + ${copies} rows > ${this.maxRows}`);
    }
    const len = src.length - skip;
    if (len > this.capacity) {
      throw new Error(`batch KV cache: a ${len}-slot prompt exceeds ${this.capacity}`);
    }
    const from = (srcRow * src.capacity + skip) * this.slotBytes;
    const out: number[] = [];
    for (let c = 0; c < copies; c++) {
      const row = this.rows;
      for (let l = 0; l < this.layers; l++) {
        const dst = row * this.rowBytes, n = len * this.slotBytes;
        this.gpu.copy(src.k[l].storage.buffer, from, this.k[l].storage.buffer, dst, n);
        this.gpu.copy(src.v[l].storage.buffer, from, this.v[l].storage.buffer, dst, n);
      }
      this.lens.push(len);
      out.push(row);
    }
    return out;
  }

  /**
   * Drop `row`; the last row moves into its place. Returns the index the moved row had (or −1
   * when `row` was the last one).
   */
  leave(row: number): number {
    const last = this.rows - 1;
    if (row < 0 || row > last) throw new Error(`batch KV cache: no row ${row} of ${this.rows}`);
    if (row === last) {
      this.lens.pop();
      return -1;
    }
    // A buffer cannot be copied onto itself: go through the scratch row.
    const used = this.lens[last] * this.slotBytes;
    const s = this.#scratch.storage.buffer;
    for (const t of [...this.k, ...this.v]) {
      const b = t.storage.buffer;
      this.gpu.copy(b, last * this.rowBytes, s, 0, used);
      this.gpu.copy(s, 0, b, row * this.rowBytes, used);
    }
    this.lens[row] = this.lens[last];
    this.lens.pop();
    return last;
  }

  /** Key mask of the next step, i32 [rows, capacity]: slots [0, lens[i]] of row i. */
  stepMask(): Int32Array {
    const m = new Int32Array(this.rows * this.capacity);
    this.lens.forEach((l, i) => m.fill(1, i * this.capacity, i * this.capacity + l + 1));
    return m;
  }

  /** GPU bytes held. */
  get bytes(): number {
    return 2 * this.layers * this.maxRows * this.rowBytes + this.rowBytes;
  }

  /** Release the buffers. */
  dispose(): void {
    for (const t of [...this.k, ...this.v, this.#scratch]) t.dispose();
    this.k = [];
    this.v = [];
    this.lens.length = 0;
  }
}

/**
 * One decode step over every live row of `kv`: tokens[i] is fed to row i at position
 * kv.lens[i]. Returns the next logits [rows, V] (CPU) and advances every row by one slot.
 */
export async function batchDecodeStep(
  model: SiqvlModel,
  kv: BatchKV,
  tokens: readonly number[],
): Promise<Float32Array> {
  const b = kv.rows;
  if (tokens.length !== b) throw new Error(`batch decode: ${tokens.length} tokens, ${b} rows`);
  const gpu = model.gpu;
  const logitsT = noGrad(() =>
    tidy(() => {
      const ids = Tensor.from(gpu, tokens, [b, 1], "i32");
      const positions = Tensor.from(gpu, kv.lens, [b, 1], "i32");
      const keyMask = Tensor.from(gpu, kv.stepMask(), [b, kv.capacity], "i32");
      const hidden = model.text.forward(model.text.embed(ids), { positions, keyMask, cache: kv });
      return model.text.logits(hidden.view([b, hidden.shape[2]]));
    })
  );
  for (let i = 0; i < b; i++) kv.lens[i]++;
  const logits = await logitsT.readF32();
  logitsT.dispose();
  assertFiniteLogits(logits, {
    phase: "batched decode step",
    vocab: logits.length / b,
    withImage: false,
  });
  return logits;
}
