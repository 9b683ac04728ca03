// Windows: binding tensors larger than one storage binding, piece by piece.
//
// A storage binding holds at most `maxStorageBufferBindingSize` bytes (128 MiB on lavapipe; a
// 151936×896 f32 embedding gradient is 544 MB), and its offset must be a multiple of
// `minStorageBufferOffsetAlignment`. Ops that may see such tensors run their kernels once per
// window. This module is the one place that cuts windows:
//
//   splitRows(total, rowBytes, …)  row ranges of a row-major matrix, aligned offsets (pure)
//   rowWindows(t, rowElems)        the same for a tensor, with its bindings
//   flatWindows(t)                 element ranges of a 4-byte tensor bound as array<vec4<…>>
//   pairedWindows(a, b)            the same element ranges of two tensors of different dtypes
//   spanBinding(t, byteStart, n)   one binding covering an arbitrary byte span (offset rounded
//                                  down; the kernel adds the remainder as an element shift)
//
// setBindingLimitForTests(bytes) makes every windowed op (gather/scatter, in-place elementwise,
// reductions, casts, AdamW, matmul staging and output, linear-CE) cut windows as if bindings held
// only `bytes`, so their window paths run on small tensors.

import type { Gpu } from "../gpu/device.ts";
import { DTYPE_BYTES, type Tensor } from "./tensor.ts";

/** A storage binding: a byte range of a buffer. */
export interface Binding {
  buffer: GPUBuffer;
  offset: number;
  size: number;
}

let bindingLimitOverride: number | null = null;

/**
 * Testing hook: pretend storage bindings hold at most `bytes` bytes (null restores the device
 * limit), so the window paths run on small tensors. Affects every windowed op.
 */
export function setBindingLimitForTests(bytes: number | null): void {
  if (bytes !== null && !(Number.isInteger(bytes) && bytes >= 256 && bytes % 4 === 0)) {
    throw new Error(`setBindingLimitForTests: bad byte count ${bytes}`);
  }
  bindingLimitOverride = bytes;
}

/** The largest storage binding (bytes) windowed ops may use. */
export function maxBindingBytes(gpu: Gpu): number {
  return Math.min(bindingLimitOverride ?? Infinity, gpu.limits.maxStorageBufferBindingSize);
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

const lcm = (a: number, b: number) => (a / gcd(a, b)) * b;

/** Rows [row0, row0 + rows) of a row-major matrix, at byte `offset`, `size` bytes. */
export interface RowRange {
  row0: number;
  rows: number;
  offset: number;
  size: number;
}

/**
 * Split `total` rows of `rowBytes` bytes into ranges of at most `limit` bytes whose byte offsets
 * are multiples of `align` and whose first rows are multiples of `multiple` (one range when all
 * fits). Sizes are rounded up to whole 32-bit words.
 */
export function splitRows(
  total: number,
  rowBytes: number,
  limit: number,
  align: number,
  multiple = 1,
): RowRange[] {
  const step = lcm(align / gcd(rowBytes, align), multiple); // rows between usable starts
  const all = Math.ceil((total * rowBytes) / 4) * 4;
  if (all <= limit) return [{ row0: 0, rows: total, offset: 0, size: Math.max(4, all) }];
  const per = Math.floor(Math.floor(limit / rowBytes) / step) * step;
  if (per < step || per === 0) {
    throw new Error(
      `a window of ${limit} bytes cannot hold ${step} row(s) of ${rowBytes} bytes ` +
        `(offset alignment ${align})`,
    );
  }
  const out: RowRange[] = [];
  for (let row0 = 0; row0 < total; row0 += per) {
    const rows = Math.min(per, total - row0);
    out.push({ row0, rows, offset: row0 * rowBytes, size: Math.ceil((rows * rowBytes) / 4) * 4 });
  }
  return out;
}

function checkLive(t: Tensor): void {
  if (t.storage.refs <= 0) {
    throw new Error(`tensor ${t.describe()} was used after its storage was released`);
  }
}

/** One window of rows [row0, row0 + rows) of a row-major tensor, and its storage binding. */
export interface RowWindow {
  row0: number;
  rows: number;
  binding: Binding;
}

/**
 * Split a tensor viewed as [size / rowElems, rowElems] into row windows that each fit one storage
 * binding (first rows multiples of `multiple`), one window when it fits.
 */
export function rowWindows(t: Tensor, rowElems: number, multiple = 1, limit?: number): RowWindow[] {
  if (!(Number.isInteger(rowElems) && rowElems > 0) || t.size % rowElems !== 0) {
    throw new Error(`rowWindows: ${t.describe()} is not made of rows of ${rowElems}`);
  }
  checkLive(t);
  const gpu = t.gpu;
  const rowBytes = rowElems * DTYPE_BYTES[t.dtype];
  const buffer = t.storage.buffer;
  try {
    return splitRows(
      t.size / rowElems,
      rowBytes,
      Math.min(limit ?? Infinity, maxBindingBytes(gpu)),
      gpu.limits.minStorageBufferOffsetAlignment,
      multiple,
    ).map((r) => ({
      row0: r.row0,
      rows: r.rows,
      binding: { buffer, offset: r.offset, size: Math.min(r.size, Math.max(4, buffer.size)) },
    }));
  } catch (e) {
    throw new Error(`${t.describe()}: ${(e as Error).message}`);
  }
}

/** One window of a flat tensor: elements [e0, e0 + n), bound whole 16-byte words. */
export interface FlatWindow {
  e0: number;
  n: number;
  binding: Binding;
}

/**
 * Split a 4-byte-element tensor into windows that fit one storage binding, for kernels that bind
 * it as array<vec4<…>>: offsets are multiples of 16 bytes and of the offset alignment, and each
 * binding is rounded up to whole 16-byte words (the padding lies inside the pooled buffer; such
 * kernels must not write lanes past `n`, or only to tensors they own entirely).
 */
export function flatWindows(t: Tensor): FlatWindow[] {
  if (DTYPE_BYTES[t.dtype] !== 4) throw new Error(`flatWindows: ${t.describe()} is not 4-byte`);
  checkLive(t);
  const quantum = lcm(16, t.gpu.limits.minStorageBufferOffsetAlignment);
  const chunk = (Math.floor(maxBindingBytes(t.gpu) / quantum) * quantum) / 4; // elements
  if (chunk === 0) throw new Error("flatWindows: storage bindings smaller than one window");
  const buffer = t.storage.buffer;
  const out: FlatWindow[] = [];
  for (let e0 = 0; e0 < t.size; e0 += chunk) {
    const n = Math.min(chunk, t.size - e0);
    const offset = e0 * 4;
    const size = Math.ceil(n / 4) * 16;
    if (offset + size > buffer.size) {
      throw new Error(`${t.describe()}: its buffer has no room for a 16-byte-padded binding`);
    }
    out.push({ e0, n, binding: { buffer, offset, size } });
  }
  return out;
}

/** Elements [e0, e0 + n) of two same-size tensors, each bound through its own window. */
export interface PairedWindow {
  e0: number;
  n: number;
  a: Binding;
  b: Binding;
}

/**
 * Element windows shared by two tensors of the same size and different element widths (a cast):
 * each window starts at an element index that keeps both byte offsets aligned.
 */
export function pairedWindows(a: Tensor, b: Tensor): PairedWindow[] {
  if (a.size !== b.size) throw new Error(`pairedWindows: ${a.describe()} vs ${b.describe()}`);
  checkLive(a);
  checkLive(b);
  const align = a.gpu.limits.minStorageBufferOffsetAlignment;
  const widest = Math.max(DTYPE_BYTES[a.dtype], DTYPE_BYTES[b.dtype]);
  const chunk = Math.floor(maxBindingBytes(a.gpu) / widest / align) * align;
  if (chunk === 0) throw new Error("pairedWindows: storage bindings smaller than one window");
  const win = (t: Tensor, e0: number, n: number): Binding => {
    const eb = DTYPE_BYTES[t.dtype];
    return { buffer: t.storage.buffer, offset: e0 * eb, size: Math.ceil((n * eb) / 4) * 4 };
  };
  const out: PairedWindow[] = [];
  for (let e0 = 0; e0 < a.size; e0 += chunk) {
    const n = Math.min(chunk, a.size - e0);
    out.push({ e0, n, a: win(a, e0, n), b: win(b, e0, n) });
  }
  return out;
}

/**
 * One binding of `t`'s buffer covering bytes [byteStart, byteStart + bytes) (clamped to the
 * tensor): the offset is rounded down to the alignment, and `shift` is the remainder in elements
 * of `elemBytes` that the kernel adds to its indices.
 */
export function spanBinding(
  t: Tensor,
  byteStart: number,
  bytes: number,
  elemBytes = DTYPE_BYTES[t.dtype],
): { binding: Binding; shift: number } {
  const align = t.gpu.limits.minStorageBufferOffsetAlignment;
  const total = Math.max(4, t.bytes);
  const start = byteStart - (byteStart % align);
  const size = Math.min(total - start, Math.ceil((byteStart - start + bytes) / 4) * 4);
  if (size > maxBindingBytes(t.gpu)) {
    throw new Error(`${t.describe()}: a span of ${bytes} bytes exceeds one storage binding`);
  }
  return {
    binding: { buffer: t.storage.buffer, offset: start, size: Math.max(4, size) },
    shift: (byteStart - start) / elemBytes,
  };
}

const placeholders = new WeakMap<Gpu, GPUBuffer>();

/**
 * A 16-byte storage buffer (one per device) to bind in the read-only slots an entry point does
 * not read (no bias; the other weight type), since layout "auto" pipelines need every slot.
 */
export function placeholderBuffer(gpu: Gpu): GPUBuffer {
  let b = placeholders.get(gpu);
  if (!b) {
    b = gpu.device.createBuffer({ size: 16, usage: GPUBufferUsage.STORAGE, label: "placeholder" });
    placeholders.set(gpu, b);
  }
  return b;
}
