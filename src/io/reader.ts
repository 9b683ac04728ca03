// The common checkpoint-reading interface, and `openTensors`, which opens a safetensors file, a
// PyTorch .bin, a sharded index, or a model directory holding any of them.

import { dirname, isAbsolute, join, normalize } from "node:path";
import type { StoredDType } from "./dtype.ts";
import { SafetensorsReader } from "./safetensors.ts";
import { openTorchBin } from "./on_demand.ts";
import { isFile, MissingFileError, readTextBounded } from "./file.ts";
import type { ModelFolder } from "./source.ts";

export type { StoredDType } from "./dtype.ts";

/** dtype and shape of one stored tensor. */
export interface TensorInfo {
  /** Stored dtype. */
  dtype: StoredDType;
  /** Dimensions, C order ([] for a scalar). */
  shape: number[];
}

/** Read access to the named tensors of a checkpoint, one tensor at a time. */
export interface TensorReader {
  /** File or directory the tensors came from (for messages). */
  readonly path: string;
  /** Tensor names, in file order. */
  keys(): string[];
  /** Whether a tensor of this name exists. */
  has(name: string): boolean;
  /** dtype and shape; throws `unknown tensor "x" in <path>` for a missing name. */
  info(name: string): TensorInfo;
  /** Raw little-endian bytes in the stored dtype, C order, contiguous. */
  read(name: string): Promise<Uint8Array>;
  /** The tensor converted to f32 (F16/BF16/F64/integers/BOOL are widened or rounded). */
  readF32(name: string): Promise<Float32Array>;
  /** File-level metadata (safetensors `__metadata__`, index `metadata`). */
  metadata(): Record<string, string>;
  /** Release file handles. */
  close(): void;
}

/** Single-file names looked for in a model directory, in order of preference. */
export const CHECKPOINT_FILES = [
  "model.safetensors",
  "model.safetensors.index.json",
  "pytorch_model.bin",
  "pytorch_model.bin.index.json",
] as const;

/**
 * Open a checkpoint: a `.safetensors` file, a PyTorch `.bin`/`.pt` file, a sharded
 * `*.index.json`, or a directory containing one of {@link CHECKPOINT_FILES} (safetensors
 * preferred). Only headers are read here; tensors are read on demand.
 */
export async function openTensors(path: string): Promise<TensorReader> {
  let st: Deno.FileInfo;
  try {
    st = await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new Error(`no such file or directory: ${path}`);
    throw e;
  }
  if (st.isDirectory) {
    for (const name of CHECKPOINT_FILES) {
      const p = join(path, name);
      if (isFile(p)) return await openFile(p);
    }
    throw new Error(
      `no checkpoint in directory ${path}: looked for ${CHECKPOINT_FILES.join(", ")}`,
    );
  }
  return await openFile(path);
}

/**
 * Open the first of `names` (safetensors files) that a folder object has: how checkpoints are
 * read where there is no file system (a browser reading a URL by ranges).
 */
export async function openFolderTensors(
  folder: ModelFolder,
  names: readonly string[] = ["model.safetensors"],
): Promise<TensorReader> {
  for (const name of names) {
    if (await folder.has(name)) return await SafetensorsReader.fromSource(await folder.open(name));
  }
  throw new Error(`no checkpoint in ${folder.path}: looked for ${names.join(", ")}`);
}

async function openFile(path: string): Promise<TensorReader> {
  if (path.endsWith(".json")) return await ShardedReader.open(path);
  if (path.endsWith(".safetensors")) return await SafetensorsReader.open(path);
  if (/\.(bin|pt|pth)$/.test(path)) return await openTorchBin(path);
  // Unknown extension: sniff. Zip archives and legacy torch pickles (PROTO 2, LONG1 of 10
  // bytes) go to the PyTorch reader, which accepts the first and refuses the second clearly.
  const head = new Uint8Array(4);
  const f = await Deno.open(path, { read: true });
  try {
    await f.read(head);
  } finally {
    f.close();
  }
  const isZip = head[0] === 0x50 && head[1] === 0x4b;
  const isLegacy = head[0] === 0x80 && head[1] === 0x02 && head[2] === 0x8a && head[3] === 0x0a;
  if (isZip || isLegacy) return await openTorchBin(path);
  return await SafetensorsReader.open(path);
}

/**
 * Tensors spread over shard files listed by a Hugging Face index
 * (`{"metadata": {...}, "weight_map": {name: file}}`), safetensors or PyTorch shards alike.
 */
export class ShardedReader implements TensorReader {
  readonly path: string;
  #shards: TensorReader[];
  #where: Map<string, TensorReader>;
  #metadata: Record<string, string>;

  private constructor(
    path: string,
    shards: TensorReader[],
    where: Map<string, TensorReader>,
    metadata: Record<string, string>,
  ) {
    this.path = path;
    this.#shards = shards;
    this.#where = where;
    this.#metadata = metadata;
  }

  /** Open an index file and every shard it names, checking each mapped tensor exists. */
  static async open(indexPath: string): Promise<ShardedReader> {
    const bad = (msg: string) => new Error(`invalid checkpoint index ${indexPath}: ${msg}`);
    let raw: unknown;
    let text: string;
    try {
      text = await readTextBounded(indexPath, "config");
    } catch (e) {
      if (e instanceof MissingFileError) throw new Error(`no such file: ${indexPath}`);
      throw e;
    }
    try {
      raw = JSON.parse(text);
    } catch (e) {
      throw bad(`not JSON (${(e as Error).message})`);
    }
    if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
      throw bad("expected a JSON object");
    }
    const { weight_map: map, metadata: meta } = raw as Record<string, unknown>;
    if (map === null || typeof map !== "object" || Array.isArray(map)) {
      throw bad(`missing "weight_map" object`);
    }
    const metadata: Record<string, string> = {};
    if (meta !== undefined && meta !== null) {
      if (typeof meta !== "object" || Array.isArray(meta)) throw bad(`"metadata" is not an object`);
      for (const [k, v] of Object.entries(meta)) {
        metadata[k] = typeof v === "string" ? v : JSON.stringify(v);
      }
    }
    const dir = dirname(indexPath);
    const byFile = new Map<string, string[]>();
    for (const [name, file] of Object.entries(map as Record<string, unknown>)) {
      if (typeof file !== "string" || file === "") {
        throw bad(`weight_map["${name}"] is not a file name`);
      }
      const norm = normalize(file);
      if (isAbsolute(file) || norm.startsWith("..")) {
        throw bad(`weight_map["${name}"] = "${file}" points outside ${dir}`);
      }
      const list = byFile.get(norm) ?? [];
      list.push(name);
      byFile.set(norm, list);
    }
    const shards: TensorReader[] = [];
    const readerOf = new Map<string, TensorReader>();
    const where = new Map<string, TensorReader>();
    try {
      for (const [file, names] of byFile) {
        const shardPath = join(dir, file);
        if (!(isFile(shardPath))) {
          throw bad(`shard ${file} (holding "${names[0]}") is missing`);
        }
        const shard = await openFile(shardPath);
        shards.push(shard);
        readerOf.set(file, shard);
        for (const name of names) {
          if (!shard.has(name)) {
            throw bad(`weight_map maps "${name}" to ${file}, which has no such tensor`);
          }
        }
      }
      // Keep the index's order.
      for (const [name, file] of Object.entries(map as Record<string, string>)) {
        where.set(name, readerOf.get(normalize(file))!);
      }
    } catch (e) {
      for (const s of shards) s.close();
      throw e;
    }
    return new ShardedReader(indexPath, shards, where, metadata);
  }

  keys(): string[] {
    return [...this.#where.keys()];
  }

  has(name: string): boolean {
    return this.#where.has(name);
  }

  #shard(name: string): TensorReader {
    const s = this.#where.get(name);
    if (!s) throw new Error(`unknown tensor "${name}" in ${this.path}`);
    return s;
  }

  info(name: string): TensorInfo {
    return this.#shard(name).info(name);
  }

  read(name: string): Promise<Uint8Array> {
    try {
      return this.#shard(name).read(name);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  readF32(name: string): Promise<Float32Array> {
    try {
      return this.#shard(name).readF32(name);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  metadata(): Record<string, string> {
    return { ...this.#metadata };
  }

  close(): void {
    for (const s of this.#shards) s.close();
  }
}
