// PyTorch `.bin` / `.pt` state dicts (torch.save zip format, torch >= 1.6): reader and writer.
//
// Archive layout (all records under one top folder, taken from the first entry):
//   {p}/data.pkl     pickle of an OrderedDict name → _rebuild_tensor_v2(storage, offset, size,
//                    stride, requires_grad, hooks); storages are persistent ids
//                    ("storage", torch.<T>Storage, key, location, numel)
//   {p}/data/{key}   raw little-endian storage bytes
//   {p}/byteorder, {p}/version, … small text records
// Tied weights share one storage key; views carry an element offset and strides. Reading a
// tensor yields C-order contiguous bytes (non-contiguous views are gathered).

import { bytesToF32, DTYPE_SIZE, isValidShape, numelOf, type StoredDType } from "./dtype.ts";
import { atomicWrite, RandomAccessFile } from "./file.ts";
import { GlobalRef, type PickleGlobal, PickleWriter, unpickle } from "./pickle.ts";
import type { TensorInfo, TensorReader } from "./reader.ts";
import { planTensors, tensorBytes, type TensorsToWrite } from "./tensor_input.ts";
import { ZipReader, ZipWriter } from "./zip.ts";

/** Storage class name (in module `torch`) for each dtype a torch checkpoint can hold. */
export const STORAGE_CLASS: Readonly<Partial<Record<StoredDType, string>>> = {
  F32: "FloatStorage",
  F64: "DoubleStorage",
  F16: "HalfStorage",
  BF16: "BFloat16Storage",
  I64: "LongStorage",
  I32: "IntStorage",
  I16: "ShortStorage",
  I8: "CharStorage",
  U8: "ByteStorage",
  BOOL: "BoolStorage",
};

/** Magic number the legacy (pre-1.6, non-zip) torch.save format pickles first. */
export const LEGACY_MAGIC = 0x1950a86a20f9469cfc6cn;

/**
 * A view may materialise at most this many times its storage's bytes (plus 64 KiB): strides of 0
 * or overlapping strides could otherwise turn a small file into an unbounded allocation.
 */
const MAX_VIEW_EXPANSION = 2;

/** Largest data.pkl accepted (a state dict's pickle is a few hundred KB). */
const MAX_PICKLE_BYTES = 256 * 1024 * 1024;

class StorageType {
  constructor(readonly dtype: StoredDType, readonly qualname: string) {}
}

interface Storage {
  key: string;
  dtype: StoredDType;
  numel: number;
  entry: string;
}

class TensorRef {
  constructor(
    readonly storage: Storage,
    readonly offset: number,
    readonly shape: number[],
    readonly stride: number[],
  ) {}
}

function isIntList(v: unknown): v is number[] {
  return Array.isArray(v) && v.every((d) => typeof d === "number" && Number.isSafeInteger(d));
}

/** Allow-listed globals for state-dict pickles, with handlers that build plain values. */
function torchGlobals(file: string): Map<string, PickleGlobal> {
  const g = new Map<string, PickleGlobal>();
  const rebuildTensor = (args: unknown[]) => {
    const [storage, offset, size, stride] = args;
    if (!(storage instanceof StorageRefBox)) {
      throw new Error(`invalid tensor in ${file}: _rebuild_tensor storage is not a storage`);
    }
    if (typeof offset !== "number" || !Number.isSafeInteger(offset) || offset < 0) {
      throw new Error(`invalid tensor in ${file}: storage offset ${String(offset)}`);
    }
    if (!isValidShape(size)) {
      throw new Error(`invalid tensor in ${file}: size ${JSON.stringify(size)}`);
    }
    if (!isIntList(stride) || stride.length !== size.length || stride.some((s) => s < 0)) {
      throw new Error(
        `invalid tensor in ${file}: stride ${JSON.stringify(stride)} for size ` +
          `${JSON.stringify(size)}`,
      );
    }
    return new TensorRef(storage.storage, offset, [...size], [...stride]);
  };
  g.set("collections.OrderedDict", {
    call: (args) => {
      const m = new Map<unknown, unknown>();
      const items = args[0];
      if (Array.isArray(items)) {
        for (const it of items) if (Array.isArray(it) && it.length === 2) m.set(it[0], it[1]);
      }
      return m;
    },
  });
  g.set("torch._utils._rebuild_tensor_v2", { call: rebuildTensor });
  g.set("torch._utils._rebuild_tensor", { call: rebuildTensor });
  const rebuildParameter = (args: unknown[]) => {
    if (!(args[0] instanceof TensorRef)) {
      throw new Error(`invalid parameter in ${file}: data is not a tensor`);
    }
    return args[0];
  };
  g.set("torch._utils._rebuild_parameter", { call: rebuildParameter });
  g.set("torch._utils._rebuild_parameter_with_state", { call: rebuildParameter });
  g.set("torch.nn.parameter.Parameter", { construct: rebuildParameter });
  g.set("torch.Size", { call: (args) => (Array.isArray(args[0]) ? [...args[0]] : []) });
  g.set("torch.device", { call: (args) => String(args[0]) });
  for (const [dtype, cls] of Object.entries(STORAGE_CLASS)) {
    g.set(`torch.${cls}`, { value: new StorageType(dtype as StoredDType, `torch.${cls}`) });
  }
  return g;
}

// Wraps a storage so a persistent id's result cannot be confused with any other value.
class StorageRefBox {
  constructor(readonly storage: Storage) {}
}

/** A PyTorch zip checkpoint read lazily; see {@link TensorReader}. */
export class TorchBinReader implements TensorReader {
  readonly path: string;
  #zip: ZipReader;
  #tensors: Map<string, TensorRef>;

  private constructor(path: string, zip: ZipReader, tensors: Map<string, TensorRef>) {
    this.path = path;
    this.#zip = zip;
    this.#tensors = tensors;
  }

  /** Open `path`, read and validate its pickle and every tensor's extent. */
  static async open(path: string): Promise<TorchBinReader> {
    const file = await RandomAccessFile.open(path);
    let zip: ZipReader | undefined;
    try {
      const head = await file.read(0, Math.min(16, file.size));
      if (!(head[0] === 0x50 && head[1] === 0x4b)) {
        if (isLegacyTorch(head)) {
          throw new Error(
            `unsupported legacy (pre-1.6, non-zip) torch.save format in ${path}: re-save it ` +
              `with torch >= 1.6 or convert it to safetensors`,
          );
        }
        throw new Error(`not a PyTorch zip checkpoint: ${path}`);
      }
      zip = await ZipReader.fromFile(file);
      const tensors = await readStateDict(zip, path);
      return new TorchBinReader(path, zip, tensors);
    } catch (e) {
      file.close();
      throw e;
    }
  }

  keys(): string[] {
    return [...this.#tensors.keys()];
  }

  has(name: string): boolean {
    return this.#tensors.has(name);
  }

  #ref(name: string): TensorRef {
    const t = this.#tensors.get(name);
    if (!t) throw new Error(`unknown tensor "${name}" in ${this.path}`);
    return t;
  }

  info(name: string): TensorInfo {
    const t = this.#ref(name);
    return { dtype: t.storage.dtype, shape: [...t.shape] };
  }

  /** Storage key and view of a tensor (tied weights report the same key). */
  storageOf(name: string): { key: string; offset: number; stride: number[] } {
    const t = this.#ref(name);
    return { key: t.storage.key, offset: t.offset, stride: [...t.stride] };
  }

  async read(name: string): Promise<Uint8Array> {
    const t = this.#ref(name);
    const es = DTYPE_SIZE[t.storage.dtype];
    const n = numelOf(t.shape);
    if (n === 0) return new Uint8Array(0);
    if (isContiguous(t.shape, t.stride)) {
      return await this.#zip.readRange(t.storage.entry, t.offset * es, n * es);
    }
    // Read the span the view touches, then gather it into C order.
    let last = t.offset;
    for (let i = 0; i < t.shape.length; i++) last += (t.shape[i] - 1) * t.stride[i];
    const src = await this.#zip.readRange(
      t.storage.entry,
      t.offset * es,
      (last - t.offset + 1) * es,
    );
    return gather(src, t.shape, t.stride, es);
  }

  async readF32(name: string): Promise<Float32Array> {
    const t = this.#ref(name);
    const bytes = await this.read(name);
    return bytesToF32(t.storage.dtype, bytes, `${this.path}:${name}`);
  }

  metadata(): Record<string, string> {
    return { format: "pt" };
  }

  close(): void {
    this.#zip.close();
  }
}

function isLegacyTorch(head: Uint8Array): boolean {
  // PROTO 2, LONG1 of 10 bytes, then the magic little-endian.
  if (head.length < 14 || head[0] !== 0x80 || head[2] !== 0x8a || head[3] !== 0x0a) return false;
  let v = 0n;
  for (let i = 13; i >= 4; i--) v = (v << 8n) | BigInt(head[i]);
  return v === LEGACY_MAGIC;
}

function isContiguous(shape: number[], stride: number[]): boolean {
  let expect = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    if (shape[i] !== 1 && stride[i] !== expect) return false;
    expect *= shape[i];
  }
  return true;
}

/** Copy a strided view (element strides, `src` starting at the view's first element). */
function gather(src: Uint8Array, shape: number[], stride: number[], es: number): Uint8Array {
  const n = numelOf(shape);
  const out = new Uint8Array(n * es);
  const nd = shape.length;
  const inner = shape[nd - 1];
  const innerStride = stride[nd - 1];
  const rows = n / inner;
  const idx = new Array<number>(Math.max(nd - 1, 0)).fill(0);
  let base = 0; // element offset of the current row's first element
  for (let r = 0; r < rows; r++) {
    const dst = r * inner * es;
    if (innerStride === 1) {
      out.set(src.subarray(base * es, (base + inner) * es), dst);
    } else {
      for (let j = 0; j < inner; j++) {
        const s = (base + j * innerStride) * es;
        for (let b = 0; b < es; b++) out[dst + j * es + b] = src[s + b];
      }
    }
    // advance the outer index (odometer over dims 0..nd-2)
    for (let d = nd - 2; d >= 0; d--) {
      idx[d]++;
      base += stride[d];
      if (idx[d] < shape[d]) break;
      base -= stride[d] * shape[d];
      idx[d] = 0;
    }
  }
  return out;
}

async function readStateDict(zip: ZipReader, path: string): Promise<Map<string, TensorRef>> {
  const first = zip.entries[0];
  if (!first) throw new Error(`invalid PyTorch checkpoint ${path}: empty archive`);
  const slash = first.name.indexOf("/");
  if (slash <= 0) {
    throw new Error(
      `invalid PyTorch checkpoint ${path}: first entry "${first.name}" has no folder`,
    );
  }
  const prefix = first.name.slice(0, slash);
  const pklName = `${prefix}/data.pkl`;
  const pkl = zip.get(pklName);
  if (!pkl) throw new Error(`invalid PyTorch checkpoint ${path}: no ${pklName}`);
  if (pkl.size > MAX_PICKLE_BYTES) {
    throw new Error(`invalid PyTorch checkpoint ${path}: ${pklName} is ${pkl.size} bytes`);
  }
  const byteorder = zip.get(`${prefix}/byteorder`);
  if (byteorder) {
    const text = new TextDecoder().decode(await zip.read(byteorder.name)).trim();
    if (text !== "little") {
      throw new Error(`unsupported byte order "${text}" in ${path} (only little-endian)`);
    }
  }
  const storages = new Map<string, Storage>();
  const persistentLoad = (pid: unknown): StorageRefBox => {
    if (!Array.isArray(pid) || pid.length < 5 || pid[0] !== "storage") {
      throw new Error(`invalid PyTorch checkpoint ${path}: unsupported persistent id`);
    }
    const [, type, key, , numel] = pid;
    if (!(type instanceof GlobalRef) || !(type.impl.value instanceof StorageType)) {
      throw new Error(`invalid PyTorch checkpoint ${path}: persistent id without a storage type`);
    }
    if (typeof key !== "string" || typeof numel !== "number" || !Number.isSafeInteger(numel)) {
      throw new Error(`invalid PyTorch checkpoint ${path}: malformed storage id`);
    }
    const dtype = type.impl.value.dtype;
    const known = storages.get(key);
    if (known) {
      if (known.dtype !== dtype) {
        throw new Error(
          `unsupported PyTorch checkpoint ${path}: storage ${key} is used as ${known.dtype} ` +
            `and ${dtype}`,
        );
      }
      return new StorageRefBox(known);
    }
    const entry = `${prefix}/data/${key}`;
    const rec = zip.get(entry);
    if (!rec) throw new Error(`invalid PyTorch checkpoint ${path}: missing record ${entry}`);
    const es = DTYPE_SIZE[dtype];
    if (rec.size !== numel * es) {
      throw new Error(
        `invalid PyTorch checkpoint ${path}: storage ${key} holds ${numel} × ${dtype} ` +
          `(${numel * es} bytes) but record ${entry} is ${rec.size} bytes`,
      );
    }
    const s: Storage = { key, dtype, numel, entry };
    storages.set(key, s);
    return new StorageRefBox(s);
  };
  const root = unpickle(await zip.read(pklName), {
    file: path,
    globals: torchGlobals(path),
    persistentLoad,
    build: (obj) => {
      // OrderedDict state carries `_metadata` (module versions); tensors may carry empty state.
      if (obj instanceof Map || obj instanceof TensorRef) return obj;
      throw new Error(`invalid PyTorch checkpoint ${path}: BUILD on an unexpected object`);
    },
  });
  if (!(root instanceof Map)) {
    throw new Error(`unsupported PyTorch checkpoint ${path}: top level is not a state dict`);
  }
  const tensors = new Map<string, TensorRef>();
  for (const [k, v] of root) {
    if (typeof k !== "string") {
      throw new Error(`unsupported PyTorch checkpoint ${path}: non-string key ${String(k)}`);
    }
    if (!(v instanceof TensorRef)) {
      throw new Error(`unsupported PyTorch checkpoint ${path}: value of "${k}" is not a tensor`);
    }
    const n = numelOf(v.shape);
    const es = DTYPE_SIZE[v.storage.dtype];
    if (n > v.storage.numel && n * es > MAX_VIEW_EXPANSION * v.storage.numel * es + 65536) {
      throw new Error(
        `unsupported PyTorch checkpoint ${path}: tensor "${k}" (shape [${v.shape.join(", ")}], ` +
          `stride [${v.stride.join(", ")}]) would materialise ${n * es} bytes from a storage ` +
          `of ${v.storage.numel * es} bytes (overlapping view); refused before allocating`,
      );
    }
    if (n > 0) {
      let last = v.offset;
      for (let i = 0; i < v.shape.length; i++) last += (v.shape[i] - 1) * v.stride[i];
      if (last >= v.storage.numel) {
        throw new Error(
          `invalid PyTorch checkpoint ${path}: tensor "${k}" (shape [${v.shape.join(", ")}], ` +
            `offset ${v.offset}, stride [${v.stride.join(", ")}]) reaches element ${last} of ` +
            `storage ${v.storage.key} which has ${v.storage.numel}`,
        );
      }
    }
    tensors.set(k, v);
  }
  return tensors;
}

// ---------------------------------------------------------------------------------------------
// Writer.

/** Options for {@link writeTorchBin}. */
export interface WriteTorchBinOptions {
  /** Top folder inside the archive; default "archive" (what torch.save to a stream writes). */
  prefix?: string;
  /** Force zip64 records (for tests). */
  forceZip64?: boolean;
}

const TORCH_DTYPES = new Set(Object.keys(STORAGE_CLASS) as StoredDType[]);

/**
 * Write a state dict as a PyTorch zip checkpoint that `torch.load(weights_only=True)` accepts:
 * a protocol-2 pickle of an OrderedDict of `_rebuild_tensor_v2` calls with persistent storage
 * ids, one 64-byte-aligned `data/{key}` record per storage, plus byteorder and version records.
 * Tensors passed with the very same data object (same bytes view or the same producer function)
 * share one storage, as tied weights do in PyTorch. Written atomically (temp file + rename).
 */
export async function writeTorchBin(
  path: string,
  tensors: TensorsToWrite,
  options: WriteTorchBinOptions = {},
): Promise<void> {
  const plan = planTensors(tensors, path, TORCH_DTYPES);
  const prefix = options.prefix ?? "archive";
  if (!/^[A-Za-z0-9_.-]+$/.test(prefix)) throw new Error(`invalid archive prefix "${prefix}"`);
  // Assign storage keys; identical data objects share one storage.
  const keyOf: string[] = [];
  const storageFirst: number[] = []; // plan index that supplies each storage's bytes
  const seen = new Map<unknown, number>(); // identity → storage index
  for (let i = 0; i < plan.length; i++) {
    const t = plan[i];
    const id = identity(t.data);
    const s = seen.get(id);
    if (s !== undefined) {
      const owner = plan[storageFirst[s]];
      if (owner.dtype !== t.dtype || owner.byteLength !== t.byteLength) {
        throw new Error(
          `tensors "${owner.name}" and "${t.name}" share data but differ in dtype or size (${path})`,
        );
      }
      keyOf.push(String(s));
    } else {
      seen.set(id, storageFirst.length);
      keyOf.push(String(storageFirst.length));
      storageFirst.push(i);
    }
  }
  const pkl = buildStateDictPickle(plan.map((t, i) => ({ ...t, key: keyOf[i] })));
  const text = (s: string) => new TextEncoder().encode(s);
  await atomicWrite(path, async (file) => {
    const zip = new ZipWriter(file, { align: 64, forceZip64: options.forceZip64 });
    await zip.add(`${prefix}/data.pkl`, pkl);
    await zip.add(`${prefix}/.format_version`, text("1"));
    await zip.add(`${prefix}/.storage_alignment`, text("64"));
    await zip.add(`${prefix}/byteorder`, text("little"));
    for (let s = 0; s < storageFirst.length; s++) {
      const t = plan[storageFirst[s]];
      await zip.add(`${prefix}/data/${s}`, await tensorBytes(t, path));
    }
    await zip.add(`${prefix}/version`, text("3\n"));
    const id = crypto.getRandomValues(new Uint32Array(4));
    const digits = [...id].map((v) => String(v).padStart(10, "0")).join("");
    await zip.add(`${prefix}/.data/serialization_id`, text(digits));
    await zip.finish();
  });
}

function identity(data: unknown): unknown {
  if (typeof data === "function") return data;
  const v = data as ArrayBufferView;
  // Same buffer, offset and length → same storage (a key string keeps it comparable).
  return bufferIds.get(v.buffer) + `:${v.byteOffset}:${v.byteLength}`;
}

// Stable ids for buffers seen during one write (WeakMap so nothing is retained).
const bufferIds = new (class {
  #ids = new WeakMap<ArrayBufferLike, number>();
  #next = 0;
  get(b: ArrayBufferLike): number {
    let id = this.#ids.get(b);
    if (id === undefined) {
      id = this.#next++;
      this.#ids.set(b, id);
    }
    return id;
  }
})();

/**
 * The data.pkl bytes for tensors stored in their storage key: contiguously at offset 0 unless a
 * tensor gives its own element `offset`, `stride` and storage `numel` (views, as tests build).
 */
export function buildStateDictPickle(
  tensors: {
    name: string;
    dtype: StoredDType;
    shape: number[];
    key: string;
    offset?: number;
    stride?: number[];
    numel?: number;
  }[],
): Uint8Array {
  const w = new PickleWriter();
  w.proto(2);
  w.global("collections", "OrderedDict").put().emptyTuple().reduce().put();
  // SETITEMS in batches of 1000, like pickle does.
  for (let start = 0; start < tensors.length; start += 1000) {
    w.mark();
    for (const t of tensors.slice(start, start + 1000)) {
      const cls = STORAGE_CLASS[t.dtype];
      if (!cls) throw new Error(`unsupported dtype ${t.dtype} in torch checkpoint:${t.name}`);
      w.str(t.name).put();
      w.global("torch._utils", "_rebuild_tensor_v2").put();
      w.mark(); // args tuple (6 items)
      // persistent id tuple ("storage", torch.XStorage, key, "cpu", numel)
      const numel = t.numel ?? numelOf(t.shape);
      w.mark().str("storage").global("torch", cls).str(t.key).str("cpu").int(numel);
      w.raw([0x74]).put().persId().put();
      w.int(t.offset ?? 0); // storage offset
      w.intTuple(t.shape).put();
      w.intTuple(t.stride ?? contiguousStride(t.shape)).put();
      w.bool(false);
      w.global("collections", "OrderedDict").put().emptyTuple().reduce().put();
      w.raw([0x74]).put(); // TUPLE
      w.reduce().put();
    }
    w.setItems();
  }
  w.stop();
  return w.bytes();
}

/** C-order strides (in elements) for `shape`. */
export function contiguousStride(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}
