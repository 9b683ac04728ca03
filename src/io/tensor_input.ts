// What the checkpoint writers accept: named tensors as a record or an ordered list, each with
// its stored dtype, shape and bytes (or a function producing the bytes when they are written,
// so a caller can hand over a multi-GB state dict one tensor at a time).

import { asBytes, DTYPE_SIZE, isValidShape, numelOf, type StoredDType } from "./dtype.ts";

/** Bytes of a tensor, or a function that produces them when the writer reaches the tensor. */
export type TensorBytes =
  | ArrayBufferView
  | (() => ArrayBufferView | Promise<ArrayBufferView>);

/** One tensor to write: C-order little-endian bytes in `dtype`. */
export interface TensorData {
  /** Stored dtype of `data`. */
  dtype: StoredDType;
  /** Dimensions, C order. */
  shape: number[];
  /** The bytes (or a producer of them). */
  data: TensorBytes;
}

/** A tensor with its name, for the ordered-list form. */
export interface NamedTensorData extends TensorData {
  /** Tensor name (state-dict key). */
  name: string;
}

/** Tensors to write: a record (insertion order kept) or an ordered list. */
export type TensorsToWrite = Record<string, TensorData> | NamedTensorData[];

/** A validated tensor to write, with its exact byte length. */
export interface PlannedTensor {
  /** Tensor name. */
  name: string;
  /** Stored dtype. */
  dtype: StoredDType;
  /** Dimensions, C order. */
  shape: number[];
  /** numel × element size. */
  byteLength: number;
  /** The bytes (or a producer of them). */
  data: TensorBytes;
}

/**
 * Validate names, dtypes, shapes and (for eager data) byte lengths before anything is written.
 * `file` names the destination in messages; `allowed` restricts the dtypes a format can store.
 */
export function planTensors(
  tensors: TensorsToWrite,
  file: string,
  allowed?: ReadonlySet<StoredDType>,
): PlannedTensor[] {
  const list: NamedTensorData[] = Array.isArray(tensors)
    ? tensors
    : Object.entries(tensors).map(([name, t]) => ({ name, ...t }));
  const seen = new Set<string>();
  const out: PlannedTensor[] = [];
  for (const t of list) {
    const { name, dtype, shape } = t;
    if (typeof name !== "string") throw new Error(`tensor name must be a string (${file})`);
    if (seen.has(name)) throw new Error(`duplicate tensor name "${name}" for ${file}`);
    seen.add(name);
    if (!Object.hasOwn(DTYPE_SIZE, dtype) || (allowed && !allowed.has(dtype))) {
      throw new Error(`unsupported dtype ${dtype} in ${file}:${name}`);
    }
    if (!isValidShape(shape)) {
      throw new Error(
        `tensor "${name}" for ${file}: shape ${JSON.stringify(shape)} is not a list of ` +
          `non-negative integers`,
      );
    }
    const byteLength = numelOf(shape) * DTYPE_SIZE[dtype];
    if (typeof t.data !== "function") checkLength(name, file, shape, dtype, t.data, byteLength);
    out.push({ name, dtype, shape: [...shape], byteLength, data: t.data });
  }
  return out;
}

function checkLength(
  name: string,
  file: string,
  shape: number[],
  dtype: StoredDType,
  data: ArrayBufferView,
  byteLength: number,
): void {
  if (!ArrayBuffer.isView(data)) {
    throw new Error(`tensor "${name}" for ${file}: data must be a typed array`);
  }
  if (data.byteLength !== byteLength) {
    throw new Error(
      `tensor "${name}" for ${file}: shape [${shape.join(", ")}] × ${dtype} needs ` +
        `${byteLength} bytes, got ${data.byteLength}`,
    );
  }
}

/** The bytes of a planned tensor, producing them if lazy and checking their length. */
export async function tensorBytes(t: PlannedTensor, file: string): Promise<Uint8Array> {
  const data = typeof t.data === "function" ? await t.data() : t.data;
  checkLength(t.name, file, t.shape, t.dtype, data, t.byteLength);
  return asBytes(data);
}
