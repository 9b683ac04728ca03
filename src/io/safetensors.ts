// safetensors: validating lazy reader and atomic streaming writer.
//
// Layout: u64 LE header length N, N bytes of UTF-8 JSON, then the byte buffer. The JSON maps
// each tensor name to {dtype, shape, data_offsets: [begin, end)} (offsets relative to the
// buffer) plus an optional "__metadata__" string→string map. The whole header is validated
// before anything else is read or allocated; tensors are read one at a time by seeking.

import { bytesToF32, DTYPE_SIZE, isStoredDType, isValidShape, numelOf } from "./dtype.ts";
import { atomicWrite, RandomAccessFile, writeAll } from "./file.ts";
import type { StoredDType, TensorInfo, TensorReader } from "./reader.ts";
import type { ByteSource } from "./source.ts";
import { planTensors, tensorBytes, type TensorsToWrite } from "./tensor_input.ts";

/** Largest header accepted (the reference implementation's cap). */
export const MAX_HEADER_BYTES = 100_000_000;

// dtypes the format defines that this library does not read.
const KNOWN_UNSUPPORTED = new Set([
  "F8_E5M2",
  "F8_E4M3",
  "F8_E4M3FN",
  "F8_E4M3FNUZ",
  "F8_E5M2FNUZ",
  "F8_E8M0",
  "F6_E2M3",
  "F6_E3M2",
  "F4",
  "C64",
  "C128",
]);

interface Entry {
  dtype: StoredDType;
  shape: number[];
  begin: number; // absolute file offset
  length: number;
}

/** Parsed and validated safetensors header. */
export interface SafetensorsHeader {
  /** Byte offset in the file where the data buffer starts (8 + header length). */
  dataStart: number;
  /** Tensors in file order of their offsets. */
  tensors: Map<string, { dtype: StoredDType; shape: number[]; offsets: [number, number] }>;
  /** The `__metadata__` map. */
  metadata: Record<string, string>;
}

/**
 * Validate a safetensors header. `headerJson` is the decoded JSON text, `fileSize` the total
 * file size. Throws a specific error naming `path` and the offending key.
 */
export function parseSafetensorsHeader(
  headerJson: string,
  headerLength: number,
  fileSize: number,
  path: string,
): SafetensorsHeader {
  let raw: unknown;
  try {
    raw = JSON.parse(headerJson);
  } catch (e) {
    throw new Error(`invalid safetensors header in ${path}: not JSON (${(e as Error).message})`);
  }
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    throw new Error(`invalid safetensors header in ${path}: expected a JSON object`);
  }
  const dataStart = 8 + headerLength;
  const bufferSize = fileSize - dataStart;
  const metadata: Record<string, string> = {};
  const tensors = new Map<
    string,
    { dtype: StoredDType; shape: number[]; offsets: [number, number] }
  >();
  for (const [key, value] of Object.entries(raw as Record<string, unknown>)) {
    if (key === "__metadata__") {
      if (value === null || typeof value !== "object" || Array.isArray(value)) {
        throw new Error(`invalid safetensors header in ${path}: __metadata__ must be an object`);
      }
      for (const [mk, mv] of Object.entries(value as Record<string, unknown>)) {
        if (typeof mv !== "string") {
          throw new Error(
            `invalid safetensors header in ${path}: __metadata__["${mk}"] must be a string`,
          );
        }
        metadata[mk] = mv;
      }
      continue;
    }
    const where = `${path}:${key}`;
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      throw new Error(`invalid safetensors header in ${where}: entry must be an object`);
    }
    const { dtype, shape, data_offsets: offsets } = value as Record<string, unknown>;
    if (typeof dtype !== "string") {
      throw new Error(`invalid safetensors header in ${where}: missing "dtype"`);
    }
    if (!isStoredDType(dtype)) {
      if (KNOWN_UNSUPPORTED.has(dtype)) throw new Error(`unsupported dtype ${dtype} in ${where}`);
      throw new Error(`unknown dtype ${JSON.stringify(dtype)} in ${where}`);
    }
    if (!isValidShape(shape)) {
      throw new Error(
        `invalid safetensors header in ${where}: shape ${JSON.stringify(shape)} is not a list ` +
          `of non-negative integers`,
      );
    }
    if (
      !Array.isArray(offsets) || offsets.length !== 2 ||
      !offsets.every((o) => typeof o === "number" && Number.isSafeInteger(o) && o >= 0) ||
      offsets[0] > offsets[1]
    ) {
      throw new Error(
        `invalid safetensors header in ${where}: data_offsets ${JSON.stringify(offsets)} ` +
          `must be [begin, end] with 0 <= begin <= end`,
      );
    }
    const [begin, end] = offsets as [number, number];
    const want = numelOf(shape) * DTYPE_SIZE[dtype];
    if (end - begin !== want) {
      throw new Error(
        `invalid safetensors header in ${where}: shape [${shape.join(", ")}] × ${dtype} is ` +
          `${want} bytes but data_offsets [${begin}, ${end}] span ${end - begin}`,
      );
    }
    if (end > bufferSize) {
      throw new Error(
        `invalid safetensors header in ${where}: data_offsets end ${end} is past the data ` +
          `buffer (${bufferSize} bytes; file truncated?)`,
      );
    }
    tensors.set(key, { dtype, shape, offsets: [begin, end] });
  }
  // The spans must tile the buffer exactly: sorted, no overlap, no hole, nothing after.
  const sorted = [...tensors.entries()].sort((a, b) =>
    a[1].offsets[0] - b[1].offsets[0] || a[1].offsets[1] - b[1].offsets[1]
  );
  let pos = 0;
  let prev = "";
  for (const [name, t] of sorted) {
    const [begin, end] = t.offsets;
    if (begin < pos) {
      throw new Error(
        `invalid safetensors header in ${path}: tensors "${prev}" and "${name}" overlap ` +
          `(bytes ${begin}..${pos})`,
      );
    }
    if (begin > pos) {
      throw new Error(
        `invalid safetensors header in ${path}: ${begin - pos} unused bytes before "${name}" ` +
          `(buffer offset ${pos})`,
      );
    }
    pos = end;
    prev = name;
  }
  if (pos !== bufferSize) {
    throw new Error(
      `invalid safetensors header in ${path}: tensors cover ${pos} bytes but the data buffer ` +
        `is ${bufferSize} bytes`,
    );
  }
  return { dataStart, tensors: new Map(sorted), metadata };
}

/** A lazily reading safetensors file; see {@link TensorReader}. */
export class SafetensorsReader implements TensorReader {
  readonly path: string;
  #file: ByteSource;
  #entries: Map<string, Entry>;
  #metadata: Record<string, string>;

  private constructor(file: ByteSource, header: SafetensorsHeader) {
    this.path = file.path;
    this.#file = file;
    this.#metadata = header.metadata;
    this.#entries = new Map();
    for (const [name, t] of header.tensors) {
      this.#entries.set(name, {
        dtype: t.dtype,
        shape: t.shape,
        begin: header.dataStart + t.offsets[0],
        length: t.offsets[1] - t.offsets[0],
      });
    }
  }

  /** Open and validate `path`. Only the header is read. */
  static async open(path: string): Promise<SafetensorsReader> {
    return await SafetensorsReader.fromSource(await RandomAccessFile.open(path));
  }

  /** Validate the header of an open byte source (a file, or a URL read by ranges); owns it. */
  static async fromSource(file: ByteSource): Promise<SafetensorsReader> {
    const path = file.path;
    try {
      if (file.size < 8) {
        throw new Error(`not a safetensors file: ${path} is ${file.size} bytes (< 8)`);
      }
      const lenBytes = await file.read(0, 8);
      const n = new DataView(lenBytes.buffer).getBigUint64(0, true);
      if (n > BigInt(MAX_HEADER_BYTES)) {
        throw new Error(
          `invalid safetensors file ${path}: header length ${n} exceeds ${MAX_HEADER_BYTES} bytes`,
        );
      }
      if (n > BigInt(file.size - 8)) {
        throw new Error(
          `invalid safetensors file ${path}: header length ${n} exceeds the file size ` +
            `(${file.size} bytes)`,
        );
      }
      const headerLength = Number(n);
      const headerBytes = await file.read(8, headerLength);
      let text: string;
      try {
        text = new TextDecoder("utf-8", { fatal: true }).decode(headerBytes);
      } catch {
        throw new Error(`invalid safetensors header in ${path}: not valid UTF-8`);
      }
      const header = parseSafetensorsHeader(text, headerLength, file.size, path);
      return new SafetensorsReader(file, header);
    } catch (e) {
      file.close();
      throw e;
    }
  }

  keys(): string[] {
    return [...this.#entries.keys()];
  }

  has(name: string): boolean {
    return this.#entries.has(name);
  }

  #entry(name: string): Entry {
    const e = this.#entries.get(name);
    if (!e) throw new Error(`unknown tensor "${name}" in ${this.path}`);
    return e;
  }

  info(name: string): TensorInfo {
    const e = this.#entry(name);
    return { dtype: e.dtype, shape: [...e.shape] };
  }

  /** Absolute file offset and byte length of a tensor's data (for zero-copy consumers). */
  span(name: string): { offset: number; length: number } {
    const e = this.#entry(name);
    return { offset: e.begin, length: e.length };
  }

  read(name: string): Promise<Uint8Array> {
    try {
      const e = this.#entry(name);
      return this.#file.read(e.begin, e.length);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  async readF32(name: string): Promise<Float32Array> {
    const e = this.#entry(name);
    const bytes = await this.#file.read(e.begin, e.length);
    if (e.dtype === "F32") return new Float32Array(bytes.buffer, 0, bytes.byteLength / 4);
    return bytesToF32(e.dtype, bytes, `${this.path}:${name}`);
  }

  metadata(): Record<string, string> {
    return { ...this.#metadata };
  }

  close(): void {
    this.#file.close();
  }
}

/**
 * Order tensors by element size, largest first (stable otherwise), as the reference writer does:
 * the data buffer starts on an 8-byte boundary and every element size divides 8, so each
 * tensor's offset is then a multiple of its own element size (zero-copy typed-array views and
 * memory-mapped readers need that).
 */
export function alignByElementSize<T extends { dtype: StoredDType }>(plan: T[]): T[] {
  const order = plan.map((t, i) => ({ t, i }));
  order.sort((a, b) => DTYPE_SIZE[b.t.dtype] - DTYPE_SIZE[a.t.dtype] || a.i - b.i);
  order.forEach((o, i) => (plan[i] = o.t));
  return plan;
}

/** Options for {@link writeSafetensors}. */
export interface WriteSafetensorsOptions {
  /** Order tensors by name instead of the given order (deterministic files). Default false. */
  sortKeys?: boolean;
}

/**
 * Write tensors to a safetensors file atomically (temporary file + rename). The header carries
 * `metadata` as `__metadata__` and is space-padded so the data buffer starts at a multiple of
 * 8 bytes; tensors are laid out by {@link alignByElementSize}. Tensor bytes are written one tensor at a time, never concatenated in memory.
 */
export async function writeSafetensors(
  path: string,
  tensors: TensorsToWrite,
  metadata?: Record<string, string>,
  options: WriteSafetensorsOptions = {},
): Promise<void> {
  const plan = planTensors(tensors, path);
  if (plan.some((t) => t.name === "__metadata__")) {
    throw new Error(`tensor name "__metadata__" is reserved in safetensors (${path})`);
  }
  if (options.sortKeys) plan.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  alignByElementSize(plan);
  const header: Record<string, unknown> = {};
  if (metadata) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== "string") {
        throw new Error(`safetensors metadata "${k}" must be a string (${path})`);
      }
    }
    header.__metadata__ = metadata;
  }
  let offset = 0;
  for (const t of plan) {
    header[t.name] = {
      dtype: t.dtype,
      shape: t.shape,
      data_offsets: [offset, offset + t.byteLength],
    };
    offset += t.byteLength;
  }
  let json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.byteLength / 8) * 8;
  if (padded !== json.byteLength) {
    const p = new Uint8Array(padded).fill(0x20);
    p.set(json);
    json = p;
  }
  if (padded > MAX_HEADER_BYTES) {
    throw new Error(`safetensors header for ${path} would be ${padded} bytes (> 100 MB)`);
  }
  await atomicWrite(path, async (file) => {
    const prefix = new Uint8Array(8);
    new DataView(prefix.buffer).setBigUint64(0, BigInt(padded), true);
    await writeAll(file, prefix);
    await writeAll(file, json);
    for (const t of plan) await writeAll(file, await tensorBytes(t, path));
  });
}
