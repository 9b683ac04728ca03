// Several LoRA adapters over one base model in memory, switched between decode steps.
//
// Each adapter directory (PEFT adapter_config.json + adapter_model.safetensors) is attached and
// loaded once through loadPeftAdapter; its per-Linear states (A, B, scaling) are then taken off
// the model and kept here. `activate(name)` puts one adapter's states on the Linears (or none for
// the base model): a pointer swap, no copy of weights. The engine groups running sequences by
// adapter and runs each group's decode step with its adapter active.

import type { Gpu } from "../gpu/device.ts";
import type { Linear, LoraState } from "../nn/linear.ts";
import { loadPeftAdapter } from "../models/peft.ts";
import type { SiqvlModel } from "../models/siqvl.ts";

/** Named adapters over one model. */
export class AdapterSet {
  readonly #states = new Map<string, Map<Linear, LoraState>>();
  readonly #linears = new Set<Linear>();
  #active: string | null = null;

  private constructor(readonly model: SiqvlModel) {}

  /** Adapter names, in load order. */
  get names(): string[] {
    return [...this.#states.keys()];
  }

  /** The adapter currently on the model (null = base). */
  get active(): string | null {
    return this.#active;
  }

  has(name: string): boolean {
    return this.#states.has(name);
  }

  /**
   * Load `adapters` (name → PEFT directory). A LoRA adapter the checkpoint itself carries is
   * merged into the base weights first, so "base" means the checkpoint as trained.
   */
  static async load(
    gpu: Gpu,
    model: SiqvlModel,
    adapters: readonly { name: string; dir: string }[],
  ): Promise<AdapterSet> {
    const set = new AdapterSet(model);
    if (adapters.length > 0 && model.text.loraLinears().length > 0) model.text.mergeLora();
    for (const { name, dir } of adapters) {
      if (set.#states.has(name)) throw new Error(`--adapters: "${name}" is given twice`);
      try {
        await loadPeftAdapter(gpu, model.text, dir);
      } catch (e) {
        throw new Error(`--adapters ${name}=${dir}: ${(e as Error).message}`);
      }
      const states = new Map<Linear, LoraState>();
      for (const [, lin] of model.text.loraLinears()) {
        states.set(lin, lin.lora!);
        set.#linears.add(lin);
        lin.lora = null;
      }
      set.#states.set(name, states);
    }
    return set;
  }

  /** Put adapter `name` (null: none) on the model. */
  activate(name: string | null): void {
    if (name === this.#active) return;
    const states = name === null ? undefined : this.#states.get(name);
    if (name !== null && !states) throw new Error(`no adapter named "${name}"`);
    for (const lin of this.#linears) lin.lora = states?.get(lin) ?? null;
    this.#active = name;
  }

  /** Free every adapter's weights (the base model is the caller's). */
  dispose(): void {
    this.activate(null);
    for (const states of this.#states.values()) {
      for (const s of states.values()) {
        s.A.dispose();
        s.B.dispose();
      }
    }
    this.#states.clear();
  }
}
