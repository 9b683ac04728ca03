// Stored (on-disk) dtypes shared by the checkpoint readers and writers, their element sizes, and
// bulk conversion of raw little-endian bytes to f32.
//
// Names follow safetensors ("F32", "BF16", …). PyTorch storages map onto the same names in
// torch_bin.ts. The host is assumed little-endian (every platform WebGPU runs on is).

/** A dtype as stored in a checkpoint file (safetensors spelling). */
export type StoredDType =
  | "F32"
  | "F16"
  | "BF16"
  | "I32"
  | "I64"
  | "U8"
  | "BOOL"
  | "F64"
  | "I8"
  | "I16"
  | "U16"
  | "U32"
  | "U64";

/** Bytes per element of each stored dtype. */
export const DTYPE_SIZE: Readonly<Record<StoredDType, number>> = {
  F32: 4,
  F16: 2,
  BF16: 2,
  I32: 4,
  I64: 8,
  U8: 1,
  BOOL: 1,
  F64: 8,
  I8: 1,
  I16: 2,
  U16: 2,
  U32: 4,
  U64: 8,
};

/** True when `s` names one of the dtypes this library reads. */
export function isStoredDType(s: unknown): s is StoredDType {
  return typeof s === "string" && Object.hasOwn(DTYPE_SIZE, s);
}

/** Product of the dimensions (1 for a scalar `[]`). */
export function numelOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** True when every dimension is a non-negative safe integer. */
export function isValidShape(shape: unknown): shape is number[] {
  return Array.isArray(shape) &&
    shape.every((d) => typeof d === "number" && Number.isSafeInteger(d) && d >= 0);
}

// f16 bits -> f32 value, as a 64 Ki-entry table built on first use (0.25 MiB).
let f16Table: Float32Array | undefined;
function halfTable(): Float32Array {
  if (f16Table) return f16Table;
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >>> 10) & 0x1f;
    const mant = h & 0x3ff;
    if (exp === 0) t[h] = sign * mant * 2 ** -24;
    else if (exp === 0x1f) t[h] = mant ? NaN : sign * Infinity;
    else t[h] = sign * (1 + mant / 1024) * 2 ** (exp - 15);
  }
  f16Table = t;
  return t;
}

/** A Uint8Array whose byteOffset is aligned to `align`, copying only when needed. */
function aligned(bytes: Uint8Array, align: number): Uint8Array {
  return bytes.byteOffset % align === 0 ? bytes : bytes.slice();
}

/**
 * Convert raw little-endian bytes of `dtype` into a new Float32Array.
 * F64 and 64-bit integers lose precision beyond f32 (as a cast would); BOOL becomes 0/1.
 * `where` names the tensor in error messages.
 */
export function bytesToF32(dtype: StoredDType, bytes: Uint8Array, where = "tensor"): Float32Array {
  const size = DTYPE_SIZE[dtype];
  if (size === undefined) throw new Error(`unsupported dtype ${dtype} in ${where}`);
  if (bytes.byteLength % size !== 0) {
    throw new Error(
      `${where}: ${bytes.byteLength} bytes is not a whole number of ${dtype} elements`,
    );
  }
  const n = bytes.byteLength / size;
  const src = aligned(bytes, size);
  const { buffer, byteOffset } = src;
  switch (dtype) {
    case "F32":
      return new Float32Array(buffer.slice(byteOffset, byteOffset + n * 4));
    case "F16": {
      const t = halfTable();
      const h = new Uint16Array(buffer, byteOffset, n);
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = t[h[i]];
      return out;
    }
    case "BF16": {
      const h = new Uint16Array(buffer, byteOffset, n);
      const out = new Float32Array(n);
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) bits[i] = h[i] << 16;
      return out;
    }
    case "F64":
      return Float32Array.from(new Float64Array(buffer, byteOffset, n));
    case "I32":
      return Float32Array.from(new Int32Array(buffer, byteOffset, n));
    case "U32":
      return Float32Array.from(new Uint32Array(buffer, byteOffset, n));
    case "I16":
      return Float32Array.from(new Int16Array(buffer, byteOffset, n));
    case "U16":
      return Float32Array.from(new Uint16Array(buffer, byteOffset, n));
    case "I8":
      return Float32Array.from(new Int8Array(buffer, byteOffset, n));
    case "U8":
      return Float32Array.from(new Uint8Array(buffer, byteOffset, n));
    case "BOOL": {
      const u = new Uint8Array(buffer, byteOffset, n);
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = u[i] ? 1 : 0;
      return out;
    }
    case "I64": {
      const v = new BigInt64Array(buffer, byteOffset, n);
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = Number(v[i]);
      return out;
    }
    case "U64": {
      const v = new BigUint64Array(buffer, byteOffset, n);
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = Number(v[i]);
      return out;
    }
  }
}

/** View any typed array (or DataView) as bytes without copying. */
export function asBytes(data: ArrayBufferView): Uint8Array {
  return data instanceof Uint8Array
    ? data
    : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}
