// Matrix products (shaders/matmul_pack.wgsl, shaders/matmul.wgsl).
//
//   matmul(a, b, {transA?, transB?, bias?}) → [..., M, N] f32
//     a: [..., M, K] (transA: [..., K, M]); f32, or f16/bf16 (widened, no gradient)
//     b: [K, N] (transB: [N, K]) shared by every leading index of a, or batched [..., K, N]
//        ([..., N, K]) with exactly a's leading dims; f32, f16 or bf16 (packed two per u32)
//     bias: [N] f32, added in the GEMM epilogue
//   linear(x, w, bias?) = matmul(x, w, {transB: true, bias}): x [..., in], w [out, in] → [..., out]
//   Backward: dA = g·op(B)ᵀ (transposed back for transA), dB = op(A)ᵀ·g only when b requires a
//   gradient (b must then be f32; a shared b sums over the leading dims), dbias = Σ_rows g.
//
// Every product, forward or backward, is brought to the one form the GEMM kernel computes,
//   X[z, p, q] = Σ_r L[z, p, r] · R[z, q, r]          (z: batch, r: contraction),
// where L and R are "row views" of tensors: element (z, p, r) sits at
//   off + z·bs + p·rs + r·ks   (elements).
// A row view is staged ("packed") into a 2-D array texture — row p of batch z is texture row
// z·rows + p, 4 contraction elements per rgba32float texel (8 raw halves per rgba32uint texel for
// half weights) — and the GEMM reads those textures. On llvmpipe a texture fetch is a vectorised
// 16-byte gather while a storage-buffer load is a scalar loop over the SIMD lanes; staging costs
// O(M·K + N·K) and makes the O(M·N·K) part 1.6–2.6× faster (bench/RESULTS.md). Packing absorbs
// the transposes and strides, so the GEMM has a single layout.
//
// Sizes beyond one storage binding (maxStorageBufferBindingSize, 128 MiB on lavapipe): a source
// tensor is read through windows (row ranges, or contraction ranges for column-major views) whose
// offsets are rounded down to minStorageBufferOffsetAlignment, the remainder travelling as an
// element offset; an output beyond one binding is written per (batch, row range) window. A texture
// holds 8192 rows per layer and up to 8192 texels per row, so contractions longer than 32768 run
// in chunks that accumulate into the output.
//
// Staging textures are cached for reuse (trimMatmulCache() frees them). A frozen weight read many
// times can be pinned (pinMatmulWeight) so it is staged only once.

import type { Gpu } from "../../gpu/device.ts";
import { registerViewBytes } from "../../gpu/profile.ts";
import { DTYPE_BYTES, record, type Storage, Tensor } from "../tensor.ts";
import { sumRows } from "./elementwise.ts";

/** Options of matmul(). */
export interface MatmulOptions {
  /** a holds [..., K, M]. */
  transA?: boolean;
  /** b holds [N, K] (the Linear weight layout). */
  transB?: boolean;
  /** [N] f32, added to every output row. */
  bias?: Tensor;
}

/** Output columns per GEMM invocation (fixed by matmul.wgsl). */
const COLS = 16;
/** Texture rows per array layer and texels per row (WebGPU's default maxTextureDimension2D). */
const LAYER_ROWS = 8192;
const MAX_TEXELS = 8192;
/** Longest contraction one GEMM pass handles (32768 = 8192 texels × 4). */
const K_CHUNK = 4 * MAX_TEXELS;
/** Free staging textures kept for reuse, in bytes, before the cache is emptied. */
const CACHE_FREE_LIMIT = 1024 * 2 ** 20;
const MAX_GRID = 65535;

// ---- tile shape ----

/** GEMM tile shape: invocations per workgroup (WG) and output rows per invocation (ROWS ≤ 16). */
export interface MatmulTiles {
  wg: number;
  rows: number;
}

const tileOverrides = new WeakMap<Gpu, MatmulTiles>();

/**
 * The tile shape used on `gpu`: {wg 8, rows 16} on a CPU (fallback) adapter such as lavapipe —
 * one 256-bit SIMD vector, big register blocks — and {wg 64, rows 4} on a GPU.
 */
export function matmulTiles(gpu: Gpu): MatmulTiles {
  return tileOverrides.get(gpu) ??
    (gpu.isFallbackAdapter ? { wg: 8, rows: 16 } : { wg: 64, rows: 4 });
}

/** Override the tile shape (tests, tuning); null restores the default. */
export function setMatmulTiles(gpu: Gpu, tiles: MatmulTiles | null): void {
  if (!tiles) {
    tileOverrides.delete(gpu);
    return;
  }
  const { wg, rows } = tiles;
  const maxWg = Math.min(
    gpu.limits.maxComputeInvocationsPerWorkgroup,
    gpu.limits.maxComputeWorkgroupSizeX,
  );
  if (!Number.isInteger(wg) || wg < 1 || wg > maxWg) {
    throw new Error(`setMatmulTiles: wg must be an integer in 1..${maxWg}, got ${wg}`);
  }
  if (!Number.isInteger(rows) || rows < 1 || rows > 16) {
    throw new Error(`setMatmulTiles: rows must be an integer in 1..16, got ${rows}`);
  }
  tileOverrides.set(gpu, { wg, rows });
}

// ---- row views ----

/** Element (z, p, r) of `t` at off + z·bs + p·rs + r·ks. */
interface RowView {
  t: Tensor;
  rows: number;
  k: number;
  rs: number;
  ks: number;
  /** 1 for a view shared by every batch of the product. */
  batches: number;
  bs: number;
  off: number;
}

function view(
  t: Tensor,
  rows: number,
  k: number,
  rs: number,
  ks: number,
  batches = 1,
  bs = 0,
  off = 0,
): RowView {
  return { t, rows, k, rs, ks, batches, bs, off };
}

// ---- staging textures ----

type TexFormat = "rgba32float" | "rgba32uint";

interface Staged {
  tex: GPUTexture;
  view: GPUTextureView;
  key: string;
  bytes: number;
  /** Owned by a pinned weight (never returned to the cache). */
  pinned?: boolean;
}

class TextureCache {
  free = new Map<string, Staged[]>();
  freeBytes = 0;
}
const caches = new WeakMap<Gpu, TextureCache>();
const dummies = new WeakMap<Gpu, GPUBuffer>();

function cacheOf(gpu: Gpu): TextureCache {
  let c = caches.get(gpu);
  if (!c) caches.set(gpu, c = new TextureCache());
  return c;
}

// Round a row count up to a size class (quarter steps between powers of two, at least 16).
function rowClass(rows: number): number {
  if (rows <= 16) return 16;
  const p = 2 ** Math.floor(Math.log2(rows));
  const step = Math.max(16, p / 4);
  return Math.min(LAYER_ROWS, Math.ceil(rows / step) * step);
}

function acquireTexture(gpu: Gpu, format: TexFormat, width: number, rows: number): Staged {
  const layers = Math.ceil(rows / LAYER_ROWS);
  if (layers > gpu.device.limits.maxTextureArrayLayers) {
    throw new Error(
      `matmul: an operand of ${rows} rows exceeds the staging texture (${LAYER_ROWS} × ` +
        `${gpu.device.limits.maxTextureArrayLayers} rows)`,
    );
  }
  const height = layers > 1 ? LAYER_ROWS : rowClass(rows);
  const key = `${format}:${width}x${height}x${layers}`;
  const cache = cacheOf(gpu);
  const list = cache.free.get(key);
  const hit = list?.pop();
  if (hit) {
    cache.freeBytes -= hit.bytes;
    return hit;
  }
  const tex = gpu.device.createTexture({
    label: `matmul ${key}`,
    size: [width, height, layers],
    format,
    usage: GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.STORAGE_BINDING |
      GPUTextureUsage.COPY_DST,
  });
  const v = tex.createView({ dimension: "2d-array" });
  registerViewBytes(v, width * height * layers * 16);
  return { tex, view: v, key, bytes: width * height * layers * 16 };
}

// Safe right away: later writes to a reused texture are ordered after the reads recorded so far.
function releaseTexture(gpu: Gpu, s: Staged): void {
  const cache = cacheOf(gpu);
  let list = cache.free.get(s.key);
  if (!list) cache.free.set(s.key, list = []);
  list.push(s);
  cache.freeBytes += s.bytes;
  if (cache.freeBytes > CACHE_FREE_LIMIT) trimMatmulCache(gpu);
}

/**
 * Destroy the staging textures matmul keeps for reuse (returns the bytes freed). Work already
 * recorded is submitted first.
 */
export function trimMatmulCache(gpu: Gpu): number {
  const cache = cacheOf(gpu);
  if (cache.freeBytes === 0) return 0;
  gpu.flush();
  let n = 0;
  for (const list of cache.free.values()) {
    for (const s of list) {
      n += s.bytes;
      s.tex.destroy();
    }
  }
  cache.free.clear();
  cache.freeBytes = 0;
  return n;
}

// A 16-byte buffer bound as `bias` when there is none.
function dummyBias(gpu: Gpu): GPUBuffer {
  let b = dummies.get(gpu);
  if (!b) {
    b = gpu.device.createBuffer({ size: 16, usage: GPUBufferUsage.STORAGE, label: "no bias" });
    dummies.set(gpu, b);
  }
  return b;
}

// ---- pinned weights: staged once, reused while pinned ----

/** Staged textures of pinned tensors, by storage, then by view and contraction range. */
const pinnedTextures = new WeakMap<Storage, Map<string, Staged>>();

/**
 * Keep the staged (texture) form of `w` between calls of matmul / linear, so a frozen weight read
 * many times (decoding) is staged once. The caller promises not to modify `w` while it is pinned;
 * unpinMatmulWeight(w) frees the textures (disposing w alone keeps them until then).
 */
export function pinMatmulWeight(w: Tensor): void {
  if (!pinnedTextures.has(w.storage)) pinnedTextures.set(w.storage, new Map());
}

/** Release the staged textures of a pinned weight (work already recorded is submitted first). */
export function unpinMatmulWeight(w: Tensor): void {
  const m = pinnedTextures.get(w.storage);
  if (!m) return;
  pinnedTextures.delete(w.storage);
  if (m.size === 0) return;
  w.gpu.flush();
  for (const s of m.values()) s.tex.destroy();
}

// ---- packing: row view → texture ----

const MODE: Record<string, number> = { f32: 0, f16: 1, bf16: 2 };

/**
 * Stage contraction elements [r0, r0 + rc) of every row of `v` into texels [0, width) of a
 * texture (rows z·v.rows + p). `half`: 8 raw halves per rgba32uint texel, else 4 f32 per texel.
 */
function pack(v: RowView, r0: number, rc: number, width: number, half: boolean): Staged {
  const pins = pinnedTextures.get(v.t.storage);
  if (!pins) return stage(v, r0, rc, width, half);
  const key = [v.rows, v.k, v.rs, v.ks, v.batches, v.bs, v.off, r0, rc, width, half].join();
  let s = pins.get(key);
  if (!s) {
    s = stage(v, r0, rc, width, half);
    s.pinned = true;
    pins.set(key, s);
  }
  return s;
}

function stage(v: RowView, r0: number, rc: number, width: number, half: boolean): Staged {
  const gpu = v.t.gpu;
  const t = v.t;
  const eb = DTYPE_BYTES[t.dtype];
  const g = half ? 8 : 4;
  const total = v.batches * v.rows;
  const staged = acquireTexture(gpu, half ? "rgba32uint" : "rgba32float", width, total);
  const kEnd = r0 + rc;
  const entry = half ? "pack_half" : "pack_f32";
  const dst = half ? [null, staged.view] : [staged.view, null];
  const maxBind = gpu.limits.maxStorageBufferBindingSize;
  const align = gpu.limits.minStorageBufferOffsetAlignment;
  const buf = t.storage.buffer;
  const tensorBytes = Math.max(4, t.bytes);

  // Fast path: rows already hold whole texels in the texture's layout (f32 → rgba32float, raw
  // halves → rgba32uint) at copyable strides — a plain buffer-to-texture copy per texture layer.
  const raw = half ? t.dtype !== "f32" : t.dtype === "f32";
  if (
    raw && v.ks === 1 && rc % g === 0 && width * g === rc && (v.rs * eb) % 256 === 0 &&
    ((v.off + r0) * eb) % 16 === 0 && (v.bs * eb) % 16 === 0
  ) {
    const uniform = v.batches === 1 || v.bs === v.rows * v.rs;
    const segments: [number, number, number][] = uniform
      ? [[0, total, v.off]]
      : Array.from({ length: v.batches }, (_, z) => [z * v.rows, v.rows, v.off + z * v.bs]);
    for (const [row0, n, off] of segments) {
      for (let p = 0; p < n;) {
        const y = (row0 + p) % LAYER_ROWS;
        const count = Math.min(n - p, LAYER_ROWS - y);
        gpu.copyToTexture(
          { buffer: buf, offset: (off + p * v.rs + r0) * eb, bytesPerRow: v.rs * eb },
          { texture: staged.tex, origin: [0, y, Math.floor((row0 + p) / LAYER_ROWS)] },
          [width, count, 1],
        );
        p += count;
      }
    }
    return staged;
  }

  // One dispatch: `rows` rows × `nt` texels from texture column t0, source element `elem` for
  // (row 0, r0 + t0·g), read through a window of `span` elements (whole tensor when span < 0).
  const run = (
    rows: number,
    nt: number,
    t0: number,
    elem: number,
    rb: number,
    bs: number,
    dstRow: number,
    span: number,
  ) => {
    if (rows === 0 || nt === 0) return;
    let start = 0, size = tensorBytes;
    if (span >= 0) {
      const byteStart = elem * eb;
      start = byteStart - (byteStart % align);
      size = Math.min(tensorBytes - start, Math.ceil((byteStart - start + span * eb) / 4) * 4);
    }
    const constants = !half && t.dtype !== "f32" ? { MODE: MODE[t.dtype] } : undefined;
    // Column-major sources: lanes along rows (neighbouring addresses), else along texels.
    const flip = v.rs < v.ks ? 1 : 0;
    const step = flip ? 64 * MAX_GRID : MAX_GRID;
    for (let row0 = 0; row0 < rows; row0 += step) {
      const n = Math.min(step, rows - row0);
      gpu.dispatch({
        shader: "matmul_pack",
        entry,
        constants,
        uniforms: [
          rows,
          nt,
          kEnd,
          r0 + t0 * g,
          t0,
          elem - start / eb,
          v.rs,
          v.ks,
          rb,
          bs,
          dstRow,
          row0,
          flip,
        ],
        bindings: [{ buffer: buf, offset: start, size: Math.max(4, size) }, ...dst],
        workgroups: flip ? [Math.ceil(n / 64), nt, 1] : [Math.ceil(nt / 64), n, 1],
        label: `${entry} ${t.describe()}`,
      });
    }
  };

  if (tensorBytes <= maxBind) {
    // One binding covers the tensor: every batch in one dispatch.
    run(total, width, 0, v.off + r0 * v.ks, v.rows, v.bs, 0, -1);
    return staged;
  }
  // Windows, one batch at a time. Capacity of a window in elements (alignment slack kept aside).
  const cap = Math.floor((maxBind - align - 4) / eb);
  const kSpan = rc > 0 ? (rc - 1) * v.ks + 1 : 1;
  for (let z = 0; z < v.batches; z++) {
    const base = v.off + z * v.bs + r0 * v.ks;
    if (v.rs >= v.ks) {
      // Row-major view: split the rows.
      if (kSpan > cap) throw new Error(`matmul: one row of ${t.describe()} exceeds a binding`);
      const per = Math.floor((cap - kSpan) / Math.max(1, v.rs)) + 1;
      for (let p0 = 0; p0 < v.rows; p0 += per) {
        const n = Math.min(per, v.rows - p0);
        run(n, width, 0, base + p0 * v.rs, n, 0, z * v.rows + p0, (n - 1) * v.rs + kSpan);
      }
    } else {
      // Column-major view: split the contraction into whole texels.
      const rowSpan = (v.rows - 1) * v.rs + 1;
      const per = Math.floor((Math.floor((cap - rowSpan) / v.ks) + 1) / g);
      if (rowSpan > cap || per < 1) {
        throw new Error(`matmul: cannot window ${t.describe()} for packing`);
      }
      for (let t0 = 0; t0 < width; t0 += per) {
        const nt = Math.min(per, width - t0);
        const used = Math.max(1, Math.min(nt * g, rc - t0 * g));
        run(
          v.rows,
          nt,
          t0,
          base + t0 * g * v.ks,
          v.rows,
          0,
          z * v.rows,
          rowSpan + (used - 1) * v.ks,
        );
      }
    }
  }
  return staged;
}

// ---- the GEMM ----

interface GemmOptions {
  bias?: Tensor;
  /** Add into `out` instead of overwriting it. */
  accumulate?: boolean;
}

/**
 * out[z, p, q] (+)= Σ_r L[z, p, r] · R[z, q, r] (+ bias[q]); out is f32 [batches, P, Q]
 * contiguous. R may be f32 or f16/bf16; L is widened to f32 while packing.
 */
function gemm(L: RowView, R: RowView, out: Tensor, opts: GemmOptions = {}): void {
  const gpu = out.gpu;
  const P = L.rows, Q = R.rows, K = L.k;
  const batches = Math.max(L.batches, R.batches);
  if (P === 0 || Q === 0 || batches === 0) return;
  const half = R.t.dtype === "f16" || R.t.dtype === "bf16";
  const maxBind = gpu.limits.maxStorageBufferBindingSize;
  const align = gpu.limits.minStorageBufferOffsetAlignment;
  const entry = half ? "gemm_half" : "gemm_f32";
  const tiles = matmulTiles(gpu);
  // Single-row products (decoding) use the 1-row variant of the kernel.
  const rows = P === 1 ? 1 : tiles.rows;
  const tileN = COLS * tiles.wg;
  // Only non-default overrides, so the common pipelines share one cache key.
  const constants: Record<string, number> = {};
  if (half) constants.BF16 = R.t.dtype === "bf16" ? 1 : 0;
  if (rows !== 16) constants.ROWS = rows;
  if (tiles.wg !== 8) constants.WG = tiles.wg;
  const biasBinding = opts.bias ? opts.bias.binding() : dummyBias(gpu);
  const outBytes = batches * P * Q * 4;
  const chunks = Math.max(1, Math.ceil(K / K_CHUNK));
  if (Math.ceil(P / rows) > MAX_GRID || Math.ceil(Q / tileN) > MAX_GRID) {
    throw new Error(`matmul: output [${P}, ${Q}] exceeds the dispatch grid`);
  }
  for (let c = 0; c < chunks; c++) {
    const r0 = c * K_CHUNK;
    const rc = Math.min(K_CHUNK, K - r0);
    const kt = half ? Math.ceil(rc / 8) : Math.ceil(rc / 4);
    const wA = Math.max(1, half ? 2 * kt : kt);
    const ta = pack(L, r0, rc, wA, false);
    const tb = pack(R, r0, rc, Math.max(1, kt), half);
    const flags = (opts.bias && c === 0 ? 1 : 0) | (opts.accumulate || c > 0 ? 2 : 0);
    const texBindings = half ? [ta.view, null, tb.view] : [ta.view, tb.view, null];
    const aStride = L.batches > 1 ? P : 0;
    const bStride = R.batches > 1 ? Q : 0;
    if (outBytes <= maxBind) {
      if (batches > MAX_GRID) throw new Error(`matmul: ${batches} batches exceed the grid`);
      gpu.dispatch({
        shader: "matmul",
        entry,
        constants,
        uniforms: [P, Q, kt, 0, aStride, 0, bStride, 0, P * Q, Q, flags],
        bindings: [...texBindings, biasBinding, out.binding()],
        workgroups: [Math.ceil(P / rows), Math.ceil(Q / tileN), batches],
        label: `${entry} [${batches}, ${P}, ${Q}] k ${rc}`,
      });
    } else {
      // Output windows of whole rows, per batch.
      const rowBytes = Q * 4;
      const per = Math.floor((maxBind - align) / rowBytes);
      if (per < 1) throw new Error(`matmul: one output row of ${Q} columns exceeds a binding`);
      const buf = out.storage.buffer;
      for (let z = 0; z < batches; z++) {
        for (let m0 = 0; m0 < P; m0 += per) {
          const mc = Math.min(per, P - m0);
          const byteStart = (z * P + m0) * rowBytes;
          const start = byteStart - (byteStart % align);
          const size = byteStart - start + mc * rowBytes;
          gpu.dispatch({
            shader: "matmul",
            entry,
            constants,
            uniforms: [
              mc,
              Q,
              kt,
              z * aStride + m0,
              0,
              z * bStride,
              0,
              (byteStart - start) / 4,
              0,
              Q,
              flags,
            ],
            bindings: [...texBindings, biasBinding, { buffer: buf, offset: start, size }],
            workgroups: [Math.ceil(mc / rows), Math.ceil(Q / tileN), 1],
            label: `${entry} window rows ${m0}.. of [${batches}, ${P}, ${Q}]`,
          });
        }
      }
    }
    if (!ta.pinned) releaseTexture(gpu, ta);
    if (!tb.pinned) releaseTexture(gpu, tb);
  }
}

// ---- the ops ----

function isFloat(t: Tensor): boolean {
  return t.dtype === "f32" || t.dtype === "f16" || t.dtype === "bf16";
}

function sameDims(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/**
 * a·b with optional transposes of the last two dims and a fused bias. See the file header for
 * shapes, dtypes and the backward.
 */
export function matmul(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
  const { transA = false, transB = false, bias } = opts;
  const desc = `matmul(${a.describe()}, ${b.describe()}${transA ? ", transA" : ""}${
    transB ? ", transB" : ""
  })`;
  if (!isFloat(a) || !isFloat(b)) throw new Error(`${desc}: operands must be f32, f16 or bf16`);
  if (a.ndim < 2) throw new Error(`${desc}: a needs at least 2 dims ([..., M, K])`);
  if (b.ndim < 2) throw new Error(`${desc}: b needs at least 2 dims ([K, N] or [N, K])`);
  if (a.gpu !== b.gpu) throw new Error(`${desc}: operands live on different devices`);
  const lead = a.shape.slice(0, -2);
  const M = transA ? a.shape[a.ndim - 1] : a.shape[a.ndim - 2];
  const K = transA ? a.shape[a.ndim - 2] : a.shape[a.ndim - 1];
  const Kb = transB ? b.shape[b.ndim - 1] : b.shape[b.ndim - 2];
  const N = transB ? b.shape[b.ndim - 2] : b.shape[b.ndim - 1];
  if (K !== Kb) throw new Error(`${desc}: contraction sizes differ (${K} vs ${Kb})`);
  const shared = b.ndim === 2;
  if (!shared && !sameDims(b.shape.slice(0, -2), lead)) {
    throw new Error(`${desc}: a batched b must have a's leading dims [${lead}]`);
  }
  if (bias) {
    if (bias.dtype !== "f32" || bias.size !== N || bias.ndim !== 1) {
      throw new Error(`${desc}: bias must be f32 [${N}], got ${bias.describe()}`);
    }
  }
  if (a.dtype !== "f32" && a.requiresGrad) {
    throw new Error(`${desc}: a requires a gradient, so it must be f32`);
  }
  if (b.dtype !== "f32" && b.requiresGrad) {
    throw new Error(`${desc}: b requires a gradient, so it must be f32 (got ${b.dtype})`);
  }
  const Z = lead.reduce((x, y) => x * y, 1);
  const gpu = a.gpu;
  const out = Tensor.empty(gpu, [...lead, M, N], "f32");
  if (out.size === 0) return out;

  // Row views of the operands: A rows m, B rows n, both along k.
  const aRowsM = transA ? view(a, M, K, 1, M, Z, M * K) : view(a, M, K, K, 1, Z, M * K);
  const bStride = shared ? 0 : K * N;
  const bBatches = shared ? 1 : Z;
  const bRowsN = transB
    ? view(b, N, K, K, 1, bBatches, bStride)
    : view(b, N, K, 1, N, bBatches, bStride);
  if (shared && !transA) {
    // Fold the leading dims into M.
    gemm(view(a, Z * M, K, K, 1), bRowsN, out, { bias });
  } else {
    gemm(aRowsM, bRowsN, out, { bias });
  }

  const inputs = bias ? [a, b, bias] : [a, b];
  // dA needs b, dB needs a: keep only those alive (a frozen weight's input is not saved).
  const save = [...(a.requiresGrad ? [b] : []), ...(b.requiresGrad ? [a] : [])];
  return record("matmul", out, inputs, (g) => {
    let da: Tensor | null = null;
    let db: Tensor | null = null;
    // g rows m along n, and rows n along m.
    const gRowsM = view(g, M, N, N, 1, Z, M * N);
    const gRowsN = view(g, N, M, 1, N, Z, M * N);
    if (a.requiresGrad) {
      // B rows k along n.
      const bRowsK = transB
        ? view(b, K, N, 1, K, bBatches, bStride)
        : view(b, K, N, N, 1, bBatches, bStride);
      da = Tensor.empty(gpu, a.shape, "f32");
      if (!transA) {
        if (shared) gemm(view(g, Z * M, N, N, 1), bRowsK, da);
        else gemm(gRowsM, bRowsK, da);
      } else {
        gemm(bRowsK, gRowsM, da); // dA stored [K, M]
      }
    }
    if (b.requiresGrad) {
      db = Tensor.empty(gpu, b.shape, "f32");
      // A rows k along m.
      const aRowsK = (z: number, batches: number) =>
        transA
          ? view(a, K, M, M, 1, batches, M * K, z * M * K)
          : view(a, K, M, 1, K, batches, M * K, z * M * K);
      const gN = (z: number, batches: number) => view(g, N, M, 1, N, batches, M * N, z * M * N);
      if (!shared) {
        if (transB) gemm(gRowsN, aRowsK(0, Z), db);
        else gemm(aRowsK(0, Z), gRowsN, db);
      } else if (!transA) {
        // Contract over all leading rows at once: a as [Z·M, K], g as [Z·M, N].
        const aK = view(a, K, Z * M, 1, K);
        const gNf = view(g, N, Z * M, 1, N);
        if (transB) gemm(gNf, aK, db);
        else gemm(aK, gNf, db);
      } else {
        for (let z = 0; z < Z; z++) {
          const opts = { accumulate: z > 0 };
          if (transB) gemm(gN(z, 1), aRowsK(z, 1), db, opts);
          else gemm(aRowsK(z, 1), gN(z, 1), db, opts);
        }
      }
    }
    const dbias = bias?.requiresGrad ? sumRows(g, N) : null;
    return [da, db, dbias];
  }, save);
}

/** x·wᵀ + bias with w in the Linear layout: x [..., in], w [out, in], bias [out] → [..., out]. */
export function linear(x: Tensor, w: Tensor, bias?: Tensor): Tensor {
  if (w.ndim !== 2) throw new Error(`linear: weight must be [out, in], got ${w.describe()}`);
  if (x.ndim < 1 || x.shape[x.ndim - 1] !== w.shape[1]) {
    throw new Error(`linear: input ${x.describe()} does not end in ${w.shape[1]} features`);
  }
  if (x.ndim === 1) {
    return matmul(x.reshape([1, w.shape[1]]), w, { transB: true, bias }).reshape([w.shape[0]]);
  }
  return matmul(x, w, { transB: true, bias });
}
