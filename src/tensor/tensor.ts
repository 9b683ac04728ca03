// Tensor: a shape, a dtype and a GPU storage buffer, plus the autograd links (`node`, `grad`).
//
// Storage is reference counted: a Tensor handle holds one reference, and every autograd node
// that saves the tensor for its backward holds another. `dispose()` drops the handle's reference;
// the buffer goes back to the pool when the last reference is gone — so a forward activation
// lives exactly until the backward step that needs it has run.
//
// Half-precision dtypes (f16, bf16) are stored packed two per u32 word and widened to f32 in the
// shaders; all arithmetic accumulates in f32.

import type { Gpu } from "../gpu/device.ts";
import { currentPart } from "../gpu/profile.ts";
import { bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits } from "./half.ts";

/** Element types a tensor can hold. */
export type DType = "f32" | "f16" | "bf16" | "i32";

/** Bytes per element. */
export const DTYPE_BYTES: Record<DType, number> = { f32: 4, f16: 2, bf16: 2, i32: 4 };

/** Number of elements of a shape. */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Bytes a tensor of this shape and dtype occupies (rounded up to whole 32-bit words). */
export function byteSize(shape: readonly number[], dtype: DType): number {
  return Math.ceil((numel(shape) * DTYPE_BYTES[dtype]) / 4) * 4;
}

/** A reference-counted GPU buffer. */
export class Storage {
  refs = 1;
  constructor(readonly gpu: Gpu, readonly buffer: GPUBuffer, readonly bytes: number) {}
  retain(): void {
    if (this.refs <= 0) throw new Error("retain of a released tensor storage");
    this.refs++;
  }
  release(): void {
    if (this.refs <= 0) return;
    if (--this.refs === 0) this.gpu.pool.release(this.buffer);
  }
}

/** A node of the autograd tape: how to push a gradient from an op's output to its inputs. */
export interface Node {
  /** Creation order (backward walks nodes in decreasing id). */
  id: number;
  /** Op name, for error messages and debugging. */
  name: string;
  /** Inputs gradients flow to (position i of `backward`'s result belongs to inputs[i]). */
  inputs: Tensor[];
  /** Given dLoss/dOutput, return dLoss/dInput for each input (null where not needed). */
  backward: (gradOut: Tensor) => (Tensor | null | undefined)[];
  /** Storages kept alive for backward; released once it has run. */
  saved: Storage[];
  /** Model part it was recorded in, while profiling (src/gpu/profile.ts). */
  part?: string;
}

// ---- scopes: tensors created inside tidy() are disposed at its end unless returned/kept ----

const scopes: Set<Tensor>[] = [];

function track(t: Tensor): void {
  const s = scopes[scopes.length - 1];
  if (s) s.add(t);
}

/** Remove a tensor from every enclosing tidy scope so it outlives them. */
export function keep<T extends Tensor>(t: T): T {
  for (const s of scopes) s.delete(t);
  return t;
}

function collect(v: unknown, out: Set<Tensor>, depth = 0): void {
  if (depth > 4 || v === null || typeof v !== "object") return;
  if (v instanceof Tensor) {
    out.add(v);
    return;
  }
  if (Array.isArray(v)) { for (const x of v) collect(x, out, depth + 1); }
  else if (Object.getPrototypeOf(v) === Object.prototype) {
    for (const x of Object.values(v as Record<string, unknown>)) collect(x, out, depth + 1);
  }
}

/**
 * Run `fn`; every tensor it creates and does not return (directly, or inside an array or plain
 * object) is disposed at the end. Storage saved by the autograd tape stays alive until backward.
 */
export function tidy<T>(fn: () => T): T {
  const scope = new Set<Tensor>();
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
  } finally {
    scopes.pop();
  }
  if (result instanceof Promise) {
    throw new Error("tidy() takes a synchronous function; await outside of it");
  }
  const ret = new Set<Tensor>();
  collect(result, ret);
  for (const t of scope) {
    if (ret.has(t)) {
      const parent = scopes[scopes.length - 1];
      if (parent) parent.add(t);
    } else t.dispose();
  }
  return result;
}

// ---- gradient mode ----

let noGradDepth = 0;

/** Whether ops record onto the tape now. */
export function isGradEnabled(): boolean {
  return noGradDepth === 0;
}

/** Run `fn` without recording the tape (evaluation, generation, optimizer updates). */
export function noGrad<T>(fn: () => T): T {
  noGradDepth++;
  try {
    const r = fn();
    if (r instanceof Promise) {
      return r.finally(() => noGradDepth--) as T;
    }
    noGradDepth--;
    return r;
  } catch (e) {
    noGradDepth--;
    throw e;
  }
}

/** Run `fn` with recording forced on (used by gradient checkpointing's recompute). */
export function enableGrad<T>(fn: () => T): T {
  const saved = noGradDepth;
  noGradDepth = 0;
  try {
    return fn();
  } finally {
    noGradDepth = saved;
  }
}

let nextNodeId = 1;

/** A fresh node id (nodes created later run earlier in backward). */
export function newNodeId(): number {
  return nextNodeId++;
}

/**
 * Attach an autograd node to `out` when grad mode is on and some input requires a gradient.
 * `save` lists tensors whose storage the backward closure reads.
 */
export function record(
  name: string,
  out: Tensor,
  inputs: Tensor[],
  backward: Node["backward"],
  save: Tensor[] = [],
): Tensor {
  if (!isGradEnabled() || !inputs.some((t) => t.requiresGrad)) return out;
  const saved = save.map((t) => {
    t.storage.retain();
    return t.storage;
  });
  out.requiresGrad = true;
  out.node = { id: nextNodeId++, name, inputs, backward, saved, part: currentPart() };
  return out;
}

// ---- Tensor ----

/** An n-dimensional array on the GPU. */
export class Tensor {
  readonly gpu: Gpu;
  readonly shape: readonly number[];
  readonly dtype: DType;
  storage: Storage;
  /** Set on leaves to collect dLoss/dThis in `grad`. */
  requiresGrad = false;
  /** Accumulated gradient (f32, same shape) of a leaf that requires it. */
  grad: Tensor | null = null;
  /** The op that produced this tensor, while its graph is alive. */
  node: Node | null = null;
  /** Optional name (parameter name), used in messages. */
  name?: string;
  #disposed = false;

  constructor(gpu: Gpu, shape: readonly number[], dtype: DType, storage?: Storage) {
    for (const d of shape) {
      if (!Number.isInteger(d) || d < 0) throw new Error(`bad shape [${shape}]`);
    }
    this.gpu = gpu;
    this.shape = [...shape];
    this.dtype = dtype;
    if (storage) {
      storage.retain();
      this.storage = storage;
    } else {
      const bytes = byteSize(shape, dtype);
      // A new Storage starts with one reference: this handle's.
      this.storage = new Storage(gpu, gpu.pool.acquire(bytes, dtype), bytes);
    }
    track(this);
  }

  /** An uninitialised tensor. */
  static empty(gpu: Gpu, shape: readonly number[], dtype: DType = "f32"): Tensor {
    return new Tensor(gpu, shape, dtype);
  }

  /** A tensor holding `data` (converted to `dtype`; numbers are rounded for half types). */
  static from(
    gpu: Gpu,
    data: ArrayLike<number>,
    shape: readonly number[],
    dtype: DType = "f32",
  ): Tensor {
    const n = numel(shape);
    if (data.length !== n) {
      throw new Error(`Tensor.from: ${data.length} values for shape [${shape}] (${n} expected)`);
    }
    const t = new Tensor(gpu, shape, dtype);
    t.write(data);
    return t;
  }

  /** Wrap raw little-endian bytes already in the dtype's layout (e.g. from safetensors). */
  static fromBytes(
    gpu: Gpu,
    bytes: Uint8Array,
    shape: readonly number[],
    dtype: DType,
  ): Tensor {
    const expect = numel(shape) * DTYPE_BYTES[dtype];
    if (bytes.byteLength !== expect) {
      throw new Error(
        `Tensor.fromBytes: ${bytes.byteLength} bytes for ${dtype}[${shape}], ` +
          `${expect} expected`,
      );
    }
    const t = new Tensor(gpu, shape, dtype);
    gpu.upload(t.storage.buffer, 0, bytes);
    return t;
  }

  /** Overwrite the contents from CPU numbers (ordered after all recorded GPU work). */
  write(data: ArrayLike<number>): void {
    this.gpu.upload(this.storage.buffer, 0, encode(data, this.dtype));
  }

  get ndim(): number {
    return this.shape.length;
  }
  /** Number of elements. */
  get size(): number {
    return numel(this.shape);
  }
  /** Bytes of storage used (whole 32-bit words). */
  get bytes(): number {
    return byteSize(this.shape, this.dtype);
  }
  get disposed(): boolean {
    return this.#disposed;
  }

  /** The storage binding of this tensor (whole buffer window it occupies). */
  binding(): { buffer: GPUBuffer; offset: number; size: number } {
    if (this.storage.refs <= 0) {
      throw new Error(`tensor ${this.describe()} was used after its storage was released`);
    }
    const size = Math.max(4, this.bytes);
    if (size > this.gpu.limits.maxStorageBufferBindingSize) {
      throw new Error(
        `tensor ${this.describe()} is ${size} bytes, more than one storage binding ` +
          `(${this.gpu.limits.maxStorageBufferBindingSize}); use an op that splits it into windows`,
      );
    }
    return { buffer: this.storage.buffer, offset: 0, size };
  }

  /** A short description: name, dtype and shape. */
  describe(): string {
    return `${this.name ? this.name + " " : ""}${this.dtype}[${this.shape.join(", ")}]`;
  }

  /** A new handle on the same storage with another shape (same number of elements). */
  view(shape: readonly number[]): Tensor {
    const n = numel(shape);
    if (n !== this.size) {
      throw new Error(`view: cannot view ${this.describe()} as [${shape}] (${n} elements)`);
    }
    return new Tensor(this.gpu, shape, this.dtype, this.storage);
  }

  /** Reshape with autograd (the gradient is reshaped back). Shares storage. */
  reshape(shape: readonly number[]): Tensor {
    const out = this.view(shape);
    const orig = this.shape;
    return record("reshape", out, [this], (g) => [g.view(orig)]);
  }

  /** The same storage, cut from the tape (no gradient flows through it). */
  detach(): Tensor {
    return new Tensor(this.gpu, this.shape, this.dtype, this.storage);
  }

  /** Drop this handle. The storage is freed when no handle or saved-for-backward use remains. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.storage.release();
    if (this.grad) {
      this.grad.dispose();
      this.grad = null;
    }
    for (const s of scopes) s.delete(this);
  }

  /** Copy the contents to the CPU (f16/bf16 widened to f32). */
  async read(): Promise<Float32Array | Int32Array> {
    const raw = await this.gpu.read(this.storage.buffer, 0, this.bytes);
    return decode(raw, this.dtype, this.size);
  }

  /** Copy to the CPU as float32 (i32 converted). */
  async readF32(): Promise<Float32Array> {
    const v = await this.read();
    return v instanceof Float32Array ? v : Float32Array.from(v);
  }

  /** The single value of a one-element tensor. */
  async item(): Promise<number> {
    if (this.size !== 1) throw new Error(`item() of ${this.describe()}`);
    return (await this.read())[0];
  }

  /** Backpropagate from this (scalar, unless `grad` is given) tensor. See tape.ts. */
  backward(grad?: Tensor): void {
    backwardImpl(this, grad);
  }
}

/** Encode numbers into the byte layout of `dtype`. */
export function encode(data: ArrayLike<number>, dtype: DType): Uint8Array {
  const n = data.length;
  switch (dtype) {
    case "f32": {
      const a = data instanceof Float32Array ? data : Float32Array.from(data);
      return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
    }
    case "i32": {
      const a = data instanceof Int32Array ? data : Int32Array.from(data);
      return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
    }
    case "f16":
    case "bf16": {
      const a = new Uint16Array(n + (n & 1));
      const f = dtype === "f16" ? f32ToF16Bits : f32ToBf16Bits;
      for (let i = 0; i < n; i++) a[i] = f(data[i]);
      return new Uint8Array(a.buffer);
    }
  }
}

/** Decode bytes of `dtype` into f32 (or i32) values. */
export function decode(raw: ArrayBuffer, dtype: DType, n: number): Float32Array | Int32Array {
  switch (dtype) {
    case "f32":
      return new Float32Array(raw, 0, n);
    case "i32":
      return new Int32Array(raw, 0, n);
    case "f16":
    case "bf16": {
      const h = new Uint16Array(raw, 0, n);
      const out = new Float32Array(n);
      const f = dtype === "f16" ? f16BitsToF32 : bf16BitsToF32;
      for (let i = 0; i < n; i++) out[i] = f(h[i]);
      return out;
    }
  }
}

// Filled in by tape.ts (kept separate so the tape reads top to bottom in one file).
let backwardImpl: (t: Tensor, grad?: Tensor) => void = () => {
  throw new Error("autograd tape not loaded");
};
/** @internal */
export function setBackwardImpl(f: (t: Tensor, grad?: Tensor) => void): void {
  backwardImpl = f;
}
