// Parameter: a named model weight that is loaded from a checkpoint or initialised, frozen or
// trainable.
//
// A frozen parameter keeps the dtype it was loaded with (bf16/f16 matrices stay packed; the kernels
// widen them). Making it trainable converts it to f32 (master weights, which AdamW updates in
// place) and sets `requiresGrad`, so gradients collect in `param.value.grad`.

import { cast, keep, noGrad, type Tensor } from "../tensor/mod.ts";

/** What a parameter is used as, which decides its storage dtype and initialisation. */
export type ParamRole =
  /** A matmul weight [out, in] (or a conv weight): may stay f16/bf16 while frozen. */
  | "matrix"
  /** An embedding table [rows, dim]: may stay f16/bf16 while frozen. */
  | "embedding"
  /** A 1-D weight or bias (norms, biases) or a small table added to activations: always f32. */
  | "vector";

/** How a parameter that no checkpoint provides is initialised. */
export type Init =
  | { kind: "normal"; std: number }
  | { kind: "uniform"; bound: number }
  | { kind: "constant"; value: number };

/** A model weight slot. `value` is set by a loader or an initialiser. */
export class Parameter {
  #value: Tensor | null = null;
  /** Full state-dict name, set when the owning module tree is listed. */
  name = "";

  constructor(readonly shape: readonly number[], readonly role: ParamRole, readonly init: Init) {}

  /** Whether a tensor has been loaded or initialised. */
  get loaded(): boolean {
    return this.#value !== null;
  }

  /** The tensor (throws when nothing was loaded). */
  get value(): Tensor {
    if (!this.#value) {
      throw new Error(
        `parameter ${this.name || `[${this.shape}]`} was never loaded or initialised`,
      );
    }
    return this.#value;
  }

  /** Install a tensor of the right shape, replacing (and disposing) the previous one. */
  set(t: Tensor): void {
    if (t.shape.length !== this.shape.length || t.shape.some((d, i) => d !== this.shape[i])) {
      throw new Error(
        `parameter ${this.name}: tensor ${t.describe()} does not have the expected shape ` +
          `[${this.shape.join(", ")}]`,
      );
    }
    if (this.role === "vector" && t.dtype !== "f32") {
      throw new Error(`parameter ${this.name} (${this.role}) must be f32, got ${t.describe()}`);
    }
    const trainable = this.trainable;
    if (this.#value && this.#value !== t) this.#value.dispose();
    this.#value = keep(t);
    t.name = this.name;
    if (trainable) this.setTrainable(true);
  }

  /** Whether the optimizer updates this parameter. */
  get trainable(): boolean {
    return this.#value?.requiresGrad ?? false;
  }

  /** Whether AdamW's decoupled weight decay applies (tensors with ndim ≥ 2). */
  get decay(): boolean {
    return this.shape.length >= 2;
  }

  /** Number of elements. */
  get size(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }

  /** Freeze or unfreeze. Unfreezing converts a half-precision weight to f32. */
  setTrainable(on: boolean): void {
    const v = this.value;
    if (on && v.dtype !== "f32") {
      if (v.dtype === "i32") throw new Error(`parameter ${this.name} is integer`);
      const f = keep(noGrad(() => cast(v, "f32")));
      f.name = this.name;
      v.dispose();
      this.#value = f;
    }
    const t = this.#value!;
    t.requiresGrad = on;
    if (!on && t.grad) {
      t.grad.dispose();
      t.grad = null;
    }
  }

  /** Release the tensor. */
  dispose(): void {
    this.#value?.dispose();
    this.#value = null;
  }
}
