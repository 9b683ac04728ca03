// Row gather / scatter ops (shaders/embedding.wgsl), for tables of any size.
//
//   embedding(ids, table)        ids: i32 [...], table: [V, H] f32/f16/bf16 → [..., H] f32
//                                backward (f32 table only): dense f32 [V, H] gradient, zero except
//                                the rows of the ids, each the sum of its tokens' gradient rows
//   gatherRows(x, idx)           x: [N, H], idx: i32 [K] → [K, H] f32 (backward: scatter-add,
//                                duplicate indices summed)
//   scatterRows(base, idx, rows) base: [N, H] f32, idx: i32 [K] (distinct), rows: [K, H] f32 →
//                                copy of base with out[idx[k]] = rows[k] (image-token fusion);
//                                backward: d base = g with the idx rows zeroed, d rows = g[idx]
// Indices outside [0, rows) read as a zero row and are never written (they cannot be checked
// without a readback: ids live on the GPU).
//
// Tensors larger than one storage binding (a 151936×896 f32 table is 544 MB; lavapipe binds at
// most 128 MiB) are bound as row windows whose byte offsets are multiples of
// minStorageBufferOffsetAlignment (src/tensor/windows.ts); every kernel runs once per window.

import type { Gpu } from "../../gpu/device.ts";
import { record, Tensor } from "../tensor.ts";
import { kernel } from "../../gpu/kernel.ts";
import { flatWindows, rowWindows } from "../windows.ts";

const WG = 256;
const MODE: Record<string, number> = { f32: 0, f16: 1, bf16: 2 };

const K = kernel("embedding", {
  uniforms: ["n", "h", "row0", "rows", "vocab", "mode"],
  bindings: ["ids", "table", "out", "links", "g", "dst", "dst4"],
});

function checkIds(op: string, ids: Tensor): void {
  if (ids.dtype !== "i32") throw new Error(`${op}: indices must be i32, got ${ids.describe()}`);
}

function checkTable(op: string, t: Tensor): [number, number] {
  if (t.ndim !== 2) throw new Error(`${op}: table must be [rows, H], got ${t.describe()}`);
  if (!(t.dtype in MODE)) throw new Error(`${op}: unsupported table dtype ${t.describe()}`);
  if (t.shape[1] === 0) throw new Error(`${op}: empty rows in ${t.describe()}`);
  return [t.shape[0], t.shape[1]];
}

/** A new f32 tensor of zeros, written window by window (any size). */
export function zerosLarge(gpu: Gpu, shape: readonly number[]): Tensor {
  const t = Tensor.empty(gpu, shape, "f32");
  for (const w of flatWindows(t)) {
    const n4 = Math.ceil(w.n / 4);
    K.dispatch(gpu, "fill_zero", {
      u: { n: n4 },
      b: { dst4: w.binding },
      workgroups: Math.ceil(n4 / 4096),
    });
  }
  return t;
}

// out [K, H] f32 = rows of table (viewed as [vocab, H]) at ids (flat K).
function gather(ids: Tensor, table: Tensor, vocab: number, h: number, outShape: number[]): Tensor {
  const gpu = table.gpu;
  const out = Tensor.empty(gpu, outShape, "f32");
  const n = ids.size * h;
  if (n === 0) return out;
  for (const w of rowWindows(table, h)) {
    K.dispatch(gpu, "gather", {
      u: { n, h, row0: w.row0, rows: w.rows, vocab, mode: MODE[table.dtype] },
      b: { ids, table: w.binding, out },
      workgroups: Math.ceil(n / WG),
    });
  }
  return out;
}

// Dense f32 [vocab, H] = Σ over tokens t of g[t] placed at row ids[t] (zero elsewhere).
function scatterAdd(ids: Tensor, g: Tensor, vocab: number, h: number): Tensor {
  const gpu = g.gpu;
  const grad = zerosLarge(gpu, [vocab, h]);
  const ntok = ids.size;
  if (ntok === 0) return grad;
  const links = Tensor.empty(gpu, [ntok, 2], "i32");
  K.dispatch(gpu, "build_links", {
    u: { n: ntok },
    b: { ids, links },
    workgroups: Math.ceil(ntok / WG),
  });
  for (const w of rowWindows(grad, h)) {
    K.dispatch(gpu, "scatter_add", {
      u: { n: ntok * h, h, row0: w.row0, rows: w.rows, vocab },
      b: { ids, links, g, dst: w.binding },
      workgroups: Math.ceil((ntok * h) / WG),
    });
  }
  links.dispose();
  return grad;
}

// In place: dst rows idx[k] = rows[k] (rows null: zero them).
function scatterSet(dst: Tensor, idx: Tensor, rows: Tensor | null): void {
  const [vocab, h] = [dst.shape[0], dst.shape[1]]; // dst: [vocab, H]
  const n = idx.size * h;
  if (n === 0) return;
  for (const w of rowWindows(dst, h)) {
    // Zeroing reads no rows: the index buffer fills the unused (read-only) slot.
    K.dispatch(dst.gpu, "scatter_set", {
      u: { n, h, row0: w.row0, rows: w.rows, vocab, mode: rows ? 0 : 1 },
      b: { ids: idx, g: rows ?? idx, dst: w.binding },
      workgroups: Math.ceil(n / WG),
    });
  }
}

function gatherOp(op: string, ids: Tensor, table: Tensor, outShape: number[]): Tensor {
  const [vocab, h] = checkTable(op, table);
  if (table.requiresGrad && table.dtype !== "f32") {
    throw new Error(`${op}: gradients need an f32 table, got ${table.describe()}`);
  }
  const out = gather(ids, table, vocab, h, outShape);
  return record(op, out, [table], (g) => [scatterAdd(ids, g, vocab, h)], [ids]);
}

/** Embedding lookup: ids i32 [...], table [V, H] (f32/f16/bf16, any size) → [..., H] f32. */
export function embedding(ids: Tensor, table: Tensor): Tensor {
  checkIds("embedding", ids);
  const [, h] = checkTable("embedding", table);
  return gatherOp("embedding", ids, table, [...ids.shape, h]);
}

/** Rows of x: x [N, H], idx i32 [K] → [K, H] f32; the backward sums duplicate indices. */
export function gatherRows(x: Tensor, idx: Tensor): Tensor {
  checkIds("gatherRows", idx);
  const [, h] = checkTable("gatherRows", x);
  if (idx.ndim !== 1) throw new Error(`gatherRows: idx must be [K], got ${idx.describe()}`);
  return gatherOp("gatherRows", idx, x, [idx.shape[0], h]);
}

/** base [N, H] with rows idx[k] replaced by rows[k]: idx i32 [K] (distinct), rows [K, H] f32. */
export function scatterRows(base: Tensor, idx: Tensor, rows: Tensor): Tensor {
  checkIds("scatterRows", idx);
  const [, h] = checkTable("scatterRows", base);
  if (base.dtype !== "f32" || rows.dtype !== "f32") {
    throw new Error(`scatterRows: expected f32, got ${base.describe()} and ${rows.describe()}`);
  }
  if (idx.ndim !== 1) throw new Error(`scatterRows: idx must be [K], got ${idx.describe()}`);
  if (rows.ndim !== 2 || rows.shape[0] !== idx.shape[0] || rows.shape[1] !== h) {
    throw new Error(
      `scatterRows: rows must be [${idx.shape[0]}, ${h}], got ${rows.describe()}`,
    );
  }
  const gpu = base.gpu;
  const out = Tensor.empty(gpu, base.shape, "f32");
  gpu.copy(base.storage.buffer, 0, out.storage.buffer, 0, base.bytes);
  scatterSet(out, idx, rows);
  return record("scatterRows", out, [base, rows], (g) => {
    let dBase: Tensor | null = null;
    if (base.requiresGrad) {
      dBase = Tensor.empty(gpu, base.shape, "f32");
      gpu.copy(g.storage.buffer, 0, dBase.storage.buffer, 0, g.bytes);
      scatterSet(dBase, idx, null);
    }
    const dRows = rows.requiresGrad ? gather(idx, g, base.shape[0], h, [idx.shape[0], h]) : null;
    return [dBase, dRows];
  }, [idx]);
}
