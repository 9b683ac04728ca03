// Embedding / gatherRows / scatterRows against float64 references, including row-windowed
// bindings (forced small, and the real 151936×896 vocabulary tables).

import { assertClose, gpu, GPU_TEST, rand, TOL } from "./util.ts";
import {
  embedding,
  f16BitsToF32,
  gatherRows,
  noGrad,
  roundBf16,
  roundF16,
  rowWindows,
  scatterRows,
  setBindingLimitForTests,
  Tensor,
  zerosLarge,
} from "../src/tensor/mod.ts";

type Arr = ArrayLike<number>;

// out[t] = table[ids[t]] (zero row for ids outside [0, V)).
function gatherRef(table: Arr, h: number, ids: readonly number[]): Float64Array {
  const v = table.length / h;
  const out = new Float64Array(ids.length * h);
  ids.forEach((id, t) => {
    if (id < 0 || id >= v) return;
    for (let j = 0; j < h; j++) out[t * h + j] = table[id * h + j];
  });
  return out;
}

// grad[ids[t]] += up[t] for every token t (ids outside [0, V) contribute nothing).
function scatterAddRef(v: number, h: number, ids: readonly number[], up: Arr): Float64Array {
  const out = new Float64Array(v * h);
  ids.forEach((id, t) => {
    if (id < 0 || id >= v) return;
    for (let j = 0; j < h; j++) out[id * h + j] += up[t * h + j];
  });
  return out;
}

function throwsWith(fn: () => unknown, text: string): void {
  let msg = "";
  try {
    fn();
  } catch (e) {
    msg = String(e);
  }
  if (!msg.includes(text)) throw new Error(`expected an error with "${text}", got "${msg}"`);
}

const gcd = (a: number, b: number): number => b ? gcd(b, a % b) : a;

// A binding limit that gives windows of k × (the fewest rows whose bytes meet the alignment),
// plus a little slack that must go unused.
function smallLimit(align: number, rowBytes: number, k = 2): number {
  return k * (rowBytes * align / gcd(rowBytes, align)) + 12;
}

Deno.test(
  "rowWindows: aligned offsets, every row covered, sizes within the limit",
  GPU_TEST,
  async () => {
    const g = await gpu();
    const align = g.limits.minStorageBufferOffsetAlignment;
    try {
      for (
        const [rows, h, dtype] of [[1001, 7, "f16"], [300, 9, "f32"], [77, 64, "bf16"]] as const
      ) {
        const limit = smallLimit(align, h * (dtype === "f32" ? 4 : 2));
        setBindingLimitForTests(limit);
        const t = Tensor.empty(g, [rows, h], dtype);
        const ws = rowWindows(t, h);
        let next = 0;
        for (const w of ws) {
          if (w.row0 !== next || w.binding.offset % align !== 0 || w.binding.size > limit) {
            throw new Error(`bad window ${JSON.stringify({ ...w, binding: undefined })}`);
          }
          next += w.rows;
        }
        if (next !== rows || ws.length < 2) throw new Error(`windows cover ${next} of ${rows}`);
        const last = ws[ws.length - 1].binding;
        if (last.offset + last.size !== t.bytes) {
          throw new Error(
            "last window does not end the tensor",
          );
        }
        t.dispose();
      }
    } finally {
      setBindingLimitForTests(null);
    }
  },
);

Deno.test(
  "embedding: gather f32/f16/bf16 tables through row windows, bad ids give 0",
  GPU_TEST,
  async () => {
    const g = await gpu();
    // Odd H: f16 rows straddle u32 words; windows hold 128 (f16) or 64 (f32) rows at align 256.
    const v = 300, h = 37;
    const tv = rand(v * h, 1, 0.05, 3);
    const ids = [5, 0, 299, 5, -1, 127, 128, 300, 63, 64, 255, 256, 299, 9];
    const idT = Tensor.from(g, ids, [2, 7], "i32");
    for (const limit of [null, smallLimit(g.limits.minStorageBufferOffsetAlignment, 2 * h, 1)]) {
      setBindingLimitForTests(limit);
      try {
        for (
          const [dtype, round] of [
            ["f32", (x: number) => x],
            ["f16", roundF16],
            ["bf16", roundBf16],
          ] as const
        ) {
          const table = Tensor.from(g, tv, [v, h], dtype);
          if (limit && rowWindows(table, h).length < 3) throw new Error("expected many windows");
          const out = embedding(idT, table);
          if (out.shape.join() !== `2,7,${h}`) throw new Error(`shape [${out.shape}]`);
          const want = gatherRef(Array.from(tv, round), h, ids);
          assertClose(await out.read(), want, 0, `${dtype} gather, limit ${limit}`);
          table.dispose();
          out.dispose();
        }
      } finally {
        setBindingLimitForTests(null);
      }
    }
    const f16 = Tensor.from(g, tv, [v, h], "f16");
    f16.requiresGrad = true;
    throwsWith(() => embedding(idT, f16), "gradients need an f32 table");
    const fids = Tensor.from(g, [1, 2], [2]);
    throwsWith(() => embedding(fids, f16), "must be i32");
    fids.dispose();
    throwsWith(() => gatherRows(f16, idT), "idx must be [K]");
    idT.dispose();
    f16.dispose();
  },
);

Deno.test(
  "embedding / gatherRows backward: scatter-add with duplicates, windowed",
  GPU_TEST,
  async () => {
    const g = await gpu();
    const v = 29, h = 16;
    const ids = [3, 28, 3, 0, 11, 3, 28, 7, -5, 29, 11, 12, 12];
    const n = ids.length;
    const tv = rand(v * h, 2), upv = rand(n * h, 3);
    const idT = Tensor.from(g, ids, [n], "i32");
    for (const limit of [null, smallLimit(g.limits.minStorageBufferOffsetAlignment, 4 * h)]) {
      setBindingLimitForTests(limit);
      try {
        const ops = [embedding, (ids: Tensor, t: Tensor) => gatherRows(t, ids)];
        for (const op of ops) {
          const table = Tensor.from(g, tv, [v, h]);
          table.requiresGrad = true;
          const out = op(idT, table);
          out.backward(Tensor.from(g, upv, [n, h]));
          const what = `${op === embedding ? "embedding" : "gatherRows"} limit ${limit}`;
          assertClose(await out.read(), gatherRef(tv, h, ids), 0, `${what} forward`);
          const grad = await table.grad!.read();
          assertClose(grad, scatterAddRef(v, h, ids, upv), TOL.f32, `${what} backward`);
          // Untouched rows are exactly zero.
          for (const r of [1, 2, 27]) {
            if (grad.subarray(r * h, (r + 1) * h).some((x) => x !== 0)) {
              throw new Error(`${what}: row ${r} of the gradient is not zero`);
            }
          }
          table.dispose();
          out.dispose();
        }
      } finally {
        setBindingLimitForTests(null);
      }
    }
    idT.dispose();
  },
);

Deno.test("scatterRows: forward and backward vs f64", GPU_TEST, async () => {
  const g = await gpu();
  const nRows = 23, h = 24;
  const idx = [4, 0, 22, 9, 13];
  const k = idx.length;
  const bv = rand(nRows * h, 5), rv = rand(k * h, 6), upv = rand(nRows * h, 7);
  const idT = Tensor.from(g, idx, [k], "i32");
  for (const limit of [null, smallLimit(g.limits.minStorageBufferOffsetAlignment, 4 * h)]) {
    setBindingLimitForTests(limit);
    try {
      const base = Tensor.from(g, bv, [nRows, h]), rows = Tensor.from(g, rv, [k, h]);
      base.requiresGrad = true;
      rows.requiresGrad = true;
      const out = scatterRows(base, idT, rows);
      out.backward(Tensor.from(g, upv, [nRows, h]));
      const want = Float64Array.from(bv), dBase = Float64Array.from(upv);
      const dRows = new Float64Array(k * h);
      idx.forEach((r, i) => {
        for (let j = 0; j < h; j++) {
          want[r * h + j] = rv[i * h + j];
          dRows[i * h + j] = upv[r * h + j];
          dBase[r * h + j] = 0;
        }
      });
      assertClose(await out.read(), want, 0, `scatterRows forward, limit ${limit}`);
      assertClose(await base.grad!.read(), dBase, 0, `scatterRows d base, limit ${limit}`);
      assertClose(await rows.grad!.read(), dRows, 0, `scatterRows d rows, limit ${limit}`);
      // The input is not modified.
      assertClose(await base.read(), bv, 0, "scatterRows leaves base alone");
      for (const t of [base, rows, out]) t.dispose();
    } finally {
      setBindingLimitForTests(null);
    }
  }
  const base = Tensor.from(g, bv, [nRows, h]);
  throwsWith(() => scatterRows(base, idT, Tensor.from(g, rv, [h, k])), `rows must be [${k}, ${h}]`);
  base.dispose();
  idT.dispose();
});

// The real Qwen2.5 vocabulary: 151936 × 896 (f16: 272 MB, 3 windows; f32: 544 MB, 5 windows on a
// 128 MiB binding limit). Only the touched rows are read back.
const V = 151936, H = 896;
// Rows at both ends and on both sides of every window boundary (f16: 74898 rows per window, f32:
// 37449), with a duplicate.
const BIG_IDS = [0, 151935, 74897, 74898, 37448, 37449, 112346, 112347, 149796, 74898, 5];

function f16Pattern(r: number, c: number): number {
  // Never zero, finite, distinct per row: |x| in [2^-3, 2^-1), sign alternating.
  return (((r + c) & 1) << 15) | (0x3000 + ((r * 7 + c * 13) % 0x0800));
}

Deno.test("embedding: 151936×896 f16 gather and f32 scatter-add gradient", GPU_TEST, async () => {
  const g = await gpu();
  const limit = g.limits.maxStorageBufferBindingSize;
  const bits = new Uint16Array(V * H);
  for (let r = 0, k = 0; r < V; r++) for (let c = 0; c < H; c++) bits[k++] = f16Pattern(r, c);
  const table = Tensor.fromBytes(g, new Uint8Array(bits.buffer), [V, H], "f16");
  const windows = rowWindows(table, H).length;
  if (limit === 128 * 2 ** 20 && windows !== 3) throw new Error(`f16: ${windows} windows`);
  const ids = Tensor.from(g, BIG_IDS, [BIG_IDS.length], "i32");
  const out = embedding(ids, table);
  const want = new Float64Array(BIG_IDS.length * H);
  BIG_IDS.forEach((r, t) => {
    for (let c = 0; c < H; c++) want[t * H + c] = f16BitsToF32(f16Pattern(r, c));
  });
  assertClose(await out.read(), want, 0, "f16 vocabulary gather");
  out.dispose();
  table.dispose();

  // f32 table (zeros, filled on the GPU) whose gradient is 544 MB.
  const t32 = zerosLarge(g, [V, H]);
  t32.requiresGrad = true;
  if (limit === 128 * 2 ** 20 && rowWindows(t32, H).length !== 5) throw new Error("f32 windows");
  const emb = embedding(ids, t32);
  const upv = rand(BIG_IDS.length * H, 9);
  emb.backward(Tensor.from(g, upv, [BIG_IDS.length, H]));
  const grad = t32.grad!;
  // Touched rows through a (windowed) gather of the gradient, in BIG_IDS order.
  const rows = noGrad(() => gatherRows(grad, ids));
  const wantRows = new Float64Array(BIG_IDS.length * H);
  BIG_IDS.forEach((r, t) => {
    BIG_IDS.forEach((r2, t2) => {
      if (r2 !== r) return;
      for (let c = 0; c < H; c++) wantRows[t * H + c] += upv[t2 * H + c];
    });
  });
  assertClose(await rows.read(), wantRows, TOL.f32, "f32 vocabulary scatter-add (touched rows)");
  // Neighbours of touched rows are zero (read small windows straight from the buffer).
  for (const r of [1, 74896, 74899, 151934]) {
    const raw = new Float32Array(await g.read(grad.storage.buffer, r * H * 4, H * 4));
    if (raw.some((x) => x !== 0)) throw new Error(`gradient row ${r} is not zero`);
  }
  for (const t of [rows, emb, ids, t32]) t.dispose();
  g.pool.trim();
});
