// LoRA, PEFT-style, in one place: inject adapters into any module tree by target names, the
// freeze rule, switching adapters off, merge / unmerge, and the PEFT parameter names.
//
//   y = x·Wᵀ + b + s · (dropout(x)·Aᵀ)·Bᵀ      A: [r, in], B: [out, r], s = alpha / r (or / √r)
//
// An adapter is a LoraState hung on a Linear (`linear.lora`); Linear's forward adds the low-rank
// term while the adapter is enabled and not merged. Names follow PEFT: "<linear path>.lora_A.weight"
// and "<linear path>.lora_B.weight". New adapters start as PEFT does: A ~ U(±1/√in)
// (kaiming-uniform with a = √5), B = 0, so a fresh adapter changes nothing.

import { add, cast, matmul, noGrad, scale, sub, tidy } from "../tensor/mod.ts";
import { dropoutId } from "./dropout.ts";
import { Linear } from "./linear.ts";
import type { Module } from "./module.ts";
import { Parameter } from "./parameter.ts";

/** LoRA hyper-parameters of one adapter. */
export interface LoraSpec {
  r: number;
  alpha: number;
  dropout: number;
  /** rsLoRA scaling alpha / √r instead of alpha / r. */
  rslora?: boolean;
}

/** A LoRA adapter attached to a Linear. */
export interface LoraState extends LoraSpec {
  A: Parameter;
  B: Parameter;
  /** alpha / r (alpha / √r with rsLoRA). */
  scaling: number;
  /** Adapters can be switched off (e.g. the DPO reference policy) without removing them. */
  enabled: boolean;
  /** Folded into the base weight (forward skips the low-rank term; unmerge restores). */
  merged: boolean;
  /** Dropout stream id. */
  id: number;
}

/** Which modules get adapters: short names ("q_proj", matched against the path's end) or a test. */
export type LoraTargets = readonly string[] | ((path: string) => boolean);

/** Whether a parameter name is a LoRA adapter weight (the freeze rule of LoRA training). */
export function isLoraParam(name: string): boolean {
  return /(^|\.)lora_[AB]\.weight$/.test(name);
}

/** A fresh adapter for `lin` (parameters uninitialised until loaded or `initialize`d). */
export function createAdapter(lin: Linear, spec: LoraSpec): LoraState {
  if (!(spec.r >= 1 && Number.isInteger(spec.r))) throw new Error(`LoRA rank ${spec.r} is invalid`);
  return {
    ...spec,
    A: new Parameter([spec.r, lin.inFeatures], "matrix", {
      kind: "uniform",
      bound: 1 / Math.sqrt(lin.inFeatures),
    }),
    B: new Parameter([lin.outFeatures, spec.r], "matrix", { kind: "constant", value: 0 }),
    scaling: spec.rslora ? spec.alpha / Math.sqrt(spec.r) : spec.alpha / spec.r,
    enabled: true,
    merged: false,
    id: dropoutId(),
  };
}

/**
 * Attach adapters to every Linear below `root` whose path matches `targets`; returns them with
 * their paths. An error when nothing matches or a Linear already has one.
 */
export function injectLora(root: Module, spec: LoraSpec, targets: LoraTargets): [string, Linear][] {
  const accept = typeof targets === "function"
    ? targets
    : (path: string) => targets.some((t) => path === t || path.endsWith(`.${t}`));
  const hit: [string, Linear][] = [];
  for (const [path, m] of root.namedModules()) {
    if (!(m instanceof Linear) || !accept(path)) continue;
    if (m.lora) throw new Error(`${path} already has a LoRA adapter`);
    m.lora = createAdapter(m, spec);
    hit.push([path, m]);
  }
  if (!hit.length) throw new Error("LoRA: no module matched the target modules");
  return hit;
}

/** Every Linear below `root` that carries an adapter, with its path. */
export function loraLinears(root: Module): [string, Linear][] {
  return root.namedModules().filter((e): e is [string, Linear] =>
    e[1] instanceof Linear && e[1].lora !== null
  );
}

/** The adapters' A and B parameters with their PEFT-style names relative to `root`. */
export function loraParameters(root: Module): [string, Parameter][] {
  return loraLinears(root).flatMap(([path, l]) => [
    [`${path}.lora_A.weight`, l.lora!.A] as [string, Parameter],
    [`${path}.lora_B.weight`, l.lora!.B] as [string, Parameter],
  ]);
}

/** Switch every adapter below `root` on or off (off = the base model, no copy). */
export function setLoraEnabled(root: Module, on: boolean): void {
  for (const [, l] of loraLinears(root)) l.lora!.enabled = on;
}

// W ± s·B·A in f32, stored back in W's dtype.
function foldInto(lin: Linear, sign: 1 | -1): void {
  const l = lin.lora!;
  const w = lin.weight.value;
  lin.weight.set(noGrad(() =>
    tidy(() => {
      const delta = scale(matmul(l.B.value, l.A.value), l.scaling);
      const base = w.dtype === "f32" ? w.detach() : cast(w, "f32");
      const out = sign > 0 ? add(base, delta) : sub(base, delta);
      return w.dtype === "f32" ? out : cast(out, w.dtype);
    })
  ));
}

/**
 * Fold every adapter below `root` into its base weight, W ← W + s·B·A (in f32, stored in W's
 * dtype). By default the adapters are then removed; with `keep` they stay, marked merged, so
 * {@link unmergeLora} can take them out again (exact only for f32 base weights).
 */
export function mergeLora(root: Module, opts: { keep?: boolean } = {}): void {
  for (const [path, lin] of loraLinears(root)) {
    if (lin.lora!.merged) continue;
    if (opts.keep && lin.weight.value.dtype !== "f32") {
      throw new Error(
        `${path}: merging with keep needs an f32 base weight (${lin.weight.value.dtype} ` +
          "rounding would make unmerge inexact)",
      );
    }
    foldInto(lin, 1);
    if (opts.keep) lin.lora!.merged = true;
    else removeAdapter(lin);
  }
}

/** Undo {@link mergeLora} with `keep`: W ← W − s·B·A, the adapters active again. */
export function unmergeLora(root: Module): void {
  for (const [, lin] of loraLinears(root)) {
    if (!lin.lora!.merged) continue;
    foldInto(lin, -1);
    lin.lora!.merged = false;
  }
}

/** Remove (and free) `lin`'s adapter without merging it. */
export function removeAdapter(lin: Linear): void {
  const l = lin.lora;
  if (!l) return;
  lin.lora = null;
  l.A.dispose();
  l.B.dispose();
}
