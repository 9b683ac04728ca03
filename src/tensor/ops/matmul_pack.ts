// Matmul operand staging (shaders/matmul_pack.wgsl): row views of tensors → 2-D array textures.
//
// A row view names element (z, p, r) of a tensor at off + z·bs + p·rs + r·ks (elements); staging
// writes row p of batch z to texture row z·rows + p, 4 contraction elements per rgba32float texel
// (8 raw halves per rgba32uint texel for half weights). Rows already in that layout are copied
// buffer-to-texture; other views (transposes, strides, f32 widening of halves) go through the pack
// kernel, windowed over the source when it exceeds one storage binding (src/tensor/windows.ts).
// Staging textures are cached for reuse (trimMatmulCache() frees them); a pinned weight
// (pinMatmulWeight) keeps its staged form between calls, so it is staged once.

import type { Gpu } from "../../gpu/device.ts";
import { kernel } from "../../gpu/kernel.ts";
import { registerViewBytes } from "../../gpu/profile.ts";
import { DTYPE_BYTES, type Storage, type Tensor } from "../tensor.ts";
import { maxBindingBytes, spanBinding } from "../windows.ts";

/** Texture rows per array layer and texels per row (WebGPU's default maxTextureDimension2D). */
export const LAYER_ROWS = 8192;
export const MAX_TEXELS = 8192;
/** Free staging textures kept for reuse, in bytes, before the cache is emptied. */
const CACHE_FREE_LIMIT = 1024 * 2 ** 20;
const MAX_GRID = 65535;

const PACK = kernel("matmul_pack", {
  uniforms: [
    "rows",
    "nt",
    "k",
    "r0",
    "t0",
    "src_base",
    "rs",
    "ks",
    "rb",
    "bs",
    "dst_row",
    "row0",
    "flip",
  ],
  bindings: ["src", "dst_f", "dst_h"],
});

// ---- row views ----

/** Element (z, p, r) of `t` at off + z·bs + p·rs + r·ks. */
export interface RowView {
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

export function view(
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

export interface Staged {
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
export function releaseTexture(gpu: Gpu, s: Staged): void {
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
export function pack(v: RowView, r0: number, rc: number, width: number, half: boolean): Staged {
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
  const dst = half ? { dst_h: staged.view } : { dst_f: staged.view };
  const maxBind = maxBindingBytes(gpu);
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
    const { binding, shift } = span >= 0
      ? spanBinding(t, elem * eb, span * eb)
      : { binding: { buffer: buf, offset: 0, size: tensorBytes }, shift: elem };
    const constants = !half && t.dtype !== "f32" ? { MODE: MODE[t.dtype] } : undefined;
    // Column-major sources: lanes along rows (neighbouring addresses), else along texels.
    const flip = v.rs < v.ks ? 1 : 0;
    const step = flip ? 64 * MAX_GRID : MAX_GRID;
    for (let row0 = 0; row0 < rows; row0 += step) {
      const n = Math.min(step, rows - row0);
      PACK.dispatch(gpu, entry, {
        constants,
        u: {
          rows,
          nt,
          k: kEnd,
          r0: r0 + t0 * g,
          t0,
          src_base: shift,
          rs: v.rs,
          ks: v.ks,
          rb,
          bs,
          dst_row: dstRow,
          row0,
          flip,
        },
        b: { src: binding, ...dst },
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
