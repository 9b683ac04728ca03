// Key/value cache for incremental decoding, preallocated per layer.
//
//   k[layer], v[layer]: [B, capacity, Hkv, D] f32, zero-initialised
//
// A forward of T new positions writes its keys/values (after RoPE) at slots
// [length, length + T) of every row with buffer copies, attends over all `capacity` slots (the
// causal rule with qOffset = length hides the unwritten ones, the key mask hides left padding),
// and then `advance(T)` moves `length`. Beam search reorders rows with `reorder`.

import type { Gpu } from "../gpu/device.ts";
import { keep, type Tensor, zeros } from "../tensor/mod.ts";
import type { KVStore } from "../models/qwen2.ts";

/** A preallocated per-layer KV cache. */
export class KVCache implements KVStore {
  k: Tensor[] = [];
  v: Tensor[] = [];
  /** Slots written so far (same for every row). */
  length = 0;

  constructor(
    readonly gpu: Gpu,
    readonly layers: number,
    public batch: number,
    readonly capacity: number,
    readonly kvHeads: number,
    readonly headDim: number,
  ) {
    const shape = [batch, capacity, kvHeads, headDim];
    for (let i = 0; i < layers; i++) {
      this.k.push(keep(zeros(gpu, shape)));
      this.v.push(keep(zeros(gpu, shape)));
    }
  }

  /** Bytes of one slot of one row (Hkv · D f32). */
  get slotBytes(): number {
    return this.kvHeads * this.headDim * 4;
  }

  /** Store keys/values [B, T, Hkv, D] at slots [length, length + T) of `layer`. */
  append(layer: number, k: Tensor, v: Tensor): { k: Tensor; v: Tensor; qOffset: number } {
    const [b, t, h, d] = k.shape;
    if (b !== this.batch || h !== this.kvHeads || d !== this.headDim || k.dtype !== "f32") {
      throw new Error(
        `KV cache [${this.batch}, ${this.capacity}, ${this.kvHeads}, ${this.headDim}]: cannot ` +
          `store keys ${k.describe()}`,
      );
    }
    if (this.length + t > this.capacity) {
      throw new Error(`KV cache full: ${this.length} + ${t} slots > capacity ${this.capacity}`);
    }
    const row = t * this.slotBytes;
    for (let i = 0; i < b; i++) {
      const dst = (i * this.capacity + this.length) * this.slotBytes;
      this.gpu.copy(k.storage.buffer, i * row, this.k[layer].storage.buffer, dst, row);
      this.gpu.copy(v.storage.buffer, i * row, this.v[layer].storage.buffer, dst, row);
    }
    return { k: this.k[layer], v: this.v[layer], qOffset: this.length };
  }

  /** Mark `t` more slots written (after every layer has appended them). */
  advance(t: number): void {
    this.length += t;
  }

  /**
   * Rebuild the rows from `parents` (row i of the new cache = row parents[i] of the old one);
   * the batch size becomes parents.length.
   */
  reorder(parents: readonly number[]): void {
    const rowBytes = this.capacity * this.slotBytes;
    const used = this.length * this.slotBytes;
    const shape = [parents.length, this.capacity, this.kvHeads, this.headDim];
    const remap = (old: Tensor) => {
      const t = keep(zeros(this.gpu, shape));
      parents.forEach((p, i) => {
        if (p < 0 || p >= this.batch) {
          throw new Error(`KV cache reorder: row ${p} of ${this.batch}`);
        }
        if (used > 0) {
          this.gpu.copy(old.storage.buffer, p * rowBytes, t.storage.buffer, i * rowBytes, used);
        }
      });
      old.dispose();
      return t;
    };
    this.k = this.k.map(remap);
    this.v = this.v.map(remap);
    this.batch = parents.length;
  }

  /** GPU bytes held. */
  get bytes(): number {
    return 2 * this.layers * this.batch * this.capacity * this.slotBytes;
  }

  /** Release the buffers. */
  dispose(): void {
    for (const t of [...this.k, ...this.v]) t.dispose();
    this.k = [];
    this.v = [];
  }
}
