// Kernel arguments by name: the one convention every op uses to call a shader.
//
// A shader file declares its uniform block as `struct P { a: u32, b: f32, … }` at @binding(0) and
// its resources as `@group(0) @binding(k) var … name: …` (k ≥ 1). An op declares the same names
// once, in the same order:
//
//   const K = kernel("embedding", {
//     uniforms: ["n", "h", "row0", "rows", "vocab", "mode"],
//     bindings: ["ids", "table", "out", "links", "g", "dst", "dst4"],
//   });
//   K.dispatch(gpu, "gather", { u: { n, h, mode }, b: { ids, table: win.binding, out },
//     workgroups });
//
// Uniforms not given are 0; bindings not given are left out (the entry point must not use them).
// A binding may be a tensor (anything with binding()), a buffer, a window or a texture view.
// tests/kernel_test.ts checks every declared layout against its WGSL source, so a renamed or
// reordered field cannot silently shift the others.

import type { BindingLike, Dispatch, UniformArg } from "./device.ts";

/** Something bindable: a raw binding, or an object (a Tensor) that knows its binding. */
export type Bindable = BindingLike | { binding(): BindingLike };

/** Uniform field names and binding names of one shader, in declaration order. */
export interface KernelLayout<U extends string, B extends string> {
  uniforms: readonly U[];
  bindings: readonly B[];
}

/** What a kernel needs from the runtime. */
export interface Dispatcher {
  dispatch(d: Dispatch): void;
}

/** Arguments of one launch. */
export interface KernelCall<U extends string, B extends string> {
  u?: Partial<Record<U, UniformArg>>;
  b: Partial<Record<B, Bindable | null | undefined>>;
  workgroups: Dispatch["workgroups"];
  constants?: Record<string, number>;
  label?: string;
}

/** A shader with named arguments. */
export class Kernel<U extends string, B extends string> {
  readonly #uIndex: Map<string, number>;
  readonly #bIndex: Map<string, number>;

  constructor(readonly shader: string, readonly layout: KernelLayout<U, B>) {
    this.#uIndex = new Map(layout.uniforms.map((n, i) => [n, i]));
    this.#bIndex = new Map(layout.bindings.map((n, i) => [n, i]));
    if (
      this.#uIndex.size !== layout.uniforms.length || this.#bIndex.size !== layout.bindings.length
    ) {
      throw new Error(`kernel ${shader}: duplicate argument names`);
    }
  }

  /** The positional uniform block for named values (missing ones are 0). */
  uniforms(values: Partial<Record<U, UniformArg>> = {}): UniformArg[] {
    const out: UniformArg[] = new Array(this.layout.uniforms.length).fill(0);
    for (const [k, v] of Object.entries(values) as [string, UniformArg | undefined][]) {
      const i = this.#uIndex.get(k);
      if (i === undefined) throw new Error(`kernel ${this.shader}: no uniform "${k}"`);
      if (v !== undefined) out[i] = v;
    }
    return out;
  }

  /** The positional bindings (slot k → @binding(k + 1)) for named resources. */
  bindings(values: Partial<Record<B, Bindable | null | undefined>>): (BindingLike | null)[] {
    const out: (BindingLike | null)[] = new Array(this.layout.bindings.length).fill(null);
    let last = -1;
    for (const [k, v] of Object.entries(values) as [string, Bindable | null | undefined][]) {
      const i = this.#bIndex.get(k);
      if (i === undefined) throw new Error(`kernel ${this.shader}: no binding "${k}"`);
      if (!v) continue;
      out[i] = typeof (v as { binding?: unknown }).binding === "function"
        ? (v as { binding(): BindingLike }).binding()
        : v as BindingLike;
      last = Math.max(last, i);
    }
    return out.slice(0, last + 1);
  }

  /** Record one launch of `entry`. */
  dispatch(gpu: Dispatcher, entry: string, call: KernelCall<U, B>): void {
    gpu.dispatch({
      shader: this.shader,
      entry,
      constants: call.constants,
      uniforms: this.layout.uniforms.length ? this.uniforms(call.u) : undefined,
      bindings: this.bindings(call.b),
      workgroups: call.workgroups,
      label: call.label ?? `${this.shader}.${entry}`,
    });
  }
}

/** Every kernel declared so far (tests check them against the WGSL). */
export const KERNELS: Kernel<string, string>[] = [];

/** Declare a shader's argument names (see the file header). */
export function kernel<const U extends string, const B extends string>(
  shader: string,
  layout: KernelLayout<U, B>,
): Kernel<U, B> {
  const k = new Kernel(shader, layout);
  KERNELS.push(k as unknown as Kernel<string, string>);
  return k;
}

/** Uniform field names (the struct at @binding(0)) and resource names by binding number, from WGSL. */
export function wgslLayout(source: string): { uniforms: string[]; bindings: Map<number, string> } {
  const code = source.replace(/\/\/[^\n]*/g, "");
  const type = /var<uniform>\s*[A-Za-z_0-9]+\s*:\s*([A-Za-z_0-9]+)/.exec(code)?.[1];
  const struct = type ? new RegExp(`struct\\s+${type}\\s*\\{([^}]*)\\}`).exec(code) : null;
  const uniforms = struct
    ? struct[1].split(",").map((f) => f.trim().split(":")[0].trim()).filter((f) => f.length > 0)
    : [];
  const bindings = new Map<number, string>();
  const re = /@binding\((\d+)\)\s*var(?:<[^>]*>)?\s+([A-Za-z_][A-Za-z0-9_]*)/g;
  for (let m = re.exec(code); m; m = re.exec(code)) {
    const k = Number(m[1]);
    if (k > 0 && !bindings.has(k)) bindings.set(k, m[2]);
  }
  return { uniforms, bindings };
}
