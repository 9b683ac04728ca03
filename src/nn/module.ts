// Module: a tree of named parameters and child modules, PyTorch-style, so state-dict names are
// the Hugging Face names ("model.layers.0.self_attn.q_proj.weight") without renaming tables.
//
// Subclasses register their parameters with `param()` and their children with `child()` in the
// constructor; forward methods are ordinary methods of the subclass.

import { type Init, Parameter, type ParamRole } from "./parameter.ts";
import { rng } from "./random.ts";
import { Tensor } from "../tensor/mod.ts";
import type { Gpu } from "../gpu/device.ts";

/** A node of the model tree. */
export class Module {
  #params = new Map<string, Parameter>();
  #children = new Map<string, Module>();
  /** Training mode (dropout active). Set for the whole tree with `train()` / `eval()`. */
  training = false;

  /** Register a parameter under a local name (may contain dots, e.g. "lora_A.weight"). */
  protected param(name: string, shape: readonly number[], role: ParamRole, init: Init): Parameter {
    const p = new Parameter(shape, role, init);
    this.#params.set(name, p);
    return p;
  }

  /** Register an existing parameter (weight tying) under a local name. */
  protected shareParam(name: string, p: Parameter): Parameter {
    this.#params.set(name, p);
    return p;
  }

  /** Remove a registered parameter (its tensor is disposed). */
  protected removeParam(name: string): void {
    this.#params.get(name)?.dispose();
    this.#params.delete(name);
  }

  /** Unregister a parameter without disposing it (it lives on elsewhere, e.g. a LoRA state). */
  protected unshareParam(name: string): void {
    this.#params.delete(name);
  }

  /** Register (or replace, with `null` remove) a child module. */
  protected child<M extends Module | null>(name: string, m: M): M {
    if (m === null) this.#children.delete(name);
    else this.#children.set(name, m);
    return m;
  }

  /** Direct children with their names. */
  children(): [string, Module][] {
    return [...this.#children];
  }

  /**
   * Every parameter below this module with its full dotted name, each once (a tied parameter is
   * listed under the first name it is reached by). Also records the name on the parameter.
   */
  namedParameters(prefix = ""): [string, Parameter][] {
    const out: [string, Parameter][] = [];
    const seen = new Set<Parameter>();
    const walk = (m: Module, pre: string) => {
      for (const [n, p] of m.#params) {
        if (seen.has(p)) continue;
        seen.add(p);
        p.name = pre + n;
        out.push([p.name, p]);
      }
      for (const [n, c] of m.#children) walk(c, `${pre}${n}.`);
    };
    walk(this, prefix);
    return out;
  }

  /** This module and every module below it with its dotted path ("" for this one). */
  namedModules(prefix = ""): [string, Module][] {
    const out: [string, Module][] = [[prefix.replace(/\.$/, ""), this]];
    for (const [n, c] of this.#children) out.push(...c.namedModules(`${prefix}${n}.`));
    return out;
  }

  /** The parameter of that full name (relative to this module). */
  parameter(name: string): Parameter {
    const p = this.namedParameters().find(([n]) => n === name)?.[1];
    if (!p) throw new Error(`no parameter named "${name}"`);
    return p;
  }

  /** Parameters the optimizer updates. */
  trainableParameters(prefix = ""): [string, Parameter][] {
    return this.namedParameters(prefix).filter(([, p]) => p.trainable);
  }

  /** Freeze or unfreeze every loaded parameter below this module. */
  setTrainable(on: boolean): void {
    for (const [, p] of this.namedParameters()) p.setTrainable(on);
  }

  /** Set training mode (dropout on) for the whole subtree. */
  train(on = true): this {
    this.training = on;
    for (const c of this.#children.values()) c.train(on);
    return this;
  }

  /** Evaluation mode (dropout off). */
  eval(): this {
    return this.train(false);
  }

  /**
   * Initialise every parameter that is still unloaded from its `init` rule, with a seeded
   * generator (normal / uniform values are drawn on the CPU in name order).
   */
  initialize(gpu: Gpu, seed = 0): void {
    const r = rng(seed);
    for (const [, p] of this.namedParameters()) {
      if (p.loaded) continue;
      p.set(Tensor.from(gpu, initValues(p.size, p.init, r), p.shape, "f32"));
    }
  }

  /** Total elements of the (deduplicated) parameters. */
  numParameters(): number {
    return this.namedParameters().reduce((s, [, p]) => s + p.size, 0);
  }

  /** GPU bytes held by the loaded parameters. */
  parameterBytes(): number {
    return this.namedParameters().reduce((s, [, p]) => s + (p.loaded ? p.value.bytes : 0), 0);
  }

  /** Release every parameter tensor. */
  dispose(): void {
    for (const [, p] of this.namedParameters()) p.dispose();
  }
}

/** Values for an initialisation rule. */
export function initValues(n: number, init: Init, r: () => number): Float32Array {
  const out = new Float32Array(n);
  switch (init.kind) {
    case "constant":
      out.fill(init.value);
      break;
    case "uniform":
      for (let i = 0; i < n; i++) out[i] = (2 * r() - 1) * init.bound;
      break;
    case "normal":
      for (let i = 0; i < n; i += 2) {
        // Box–Muller: two normals per pair of uniforms.
        const u1 = Math.max(r(), 1e-300), u2 = r();
        const rad = Math.sqrt(-2 * Math.log(u1)) * init.std;
        out[i] = rad * Math.cos(2 * Math.PI * u2);
        if (i + 1 < n) out[i + 1] = rad * Math.sin(2 * Math.PI * u2);
      }
      break;
  }
  return out;
}

/** A plain container of named children (PyTorch's ModuleDict / ModuleList). */
export class ModuleDict extends Module {
  /** Register `m` under `name` and return it. */
  add<M extends Module>(name: string, m: M): M {
    return this.child(name, m);
  }
}
