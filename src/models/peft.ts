// PEFT LoRA adapters for the Qwen2 language model: adapter_config.json +
// adapter_model.safetensors (or adapter_model.bin) with PEFT's names,
//
//   base_model.model.<module path>.lora_A.weight   [r, in]
//   base_model.model.<module path>.lora_B.weight   [out, r]
//
// (module path e.g. "model.layers.0.self_attn.q_proj"; files written by a PEFT model in memory
// may also carry the adapter name, ".lora_A.default.weight", which is accepted).

import { removeAdapter } from "../nn/lora.ts";
import { join } from "node:path";
import { openFolderTensors, openTensors, type TensorReader } from "../io/reader.ts";
import { type ModelFolder, requireText } from "../io/source.ts";
import { asFolder } from "../io/source_local.ts";
import { writeSafetensors } from "../io/safetensors.ts";
import type { Gpu } from "../gpu/device.ts";
import type { LoraSpec } from "../nn/linear.ts";
import { loadParameter } from "../nn/load.ts";
import { LORA_TARGETS, type Qwen2ForCausalLM } from "./qwen2.ts";
import { tensorToSafetensors } from "./tensor_bytes.ts";

/** The adapter_config.json fields siqvl uses. */
export interface PeftLoraConfig extends LoraSpec {
  /** Module names (suffix match, as PEFT does) or one regular expression (full match). */
  targetModules: string[] | string;
  baseModelNameOrPath?: string;
}

/** Prefix PEFT puts before the wrapped model's own names. */
export const PEFT_PREFIX = "base_model.model.";

/** Parse adapter_config.json, refusing options siqvl does not implement. */
export function parsePeftConfig(json: Record<string, unknown>, where: string): PeftLoraConfig {
  const type = json.peft_type ?? "LORA";
  if (type !== "LORA") throw new Error(`${where}: peft_type ${JSON.stringify(type)} is not LORA`);
  const bad: string[] = [];
  if ((json.bias ?? "none") !== "none") bad.push(`bias "${json.bias}" (only "none")`);
  if (json.use_dora === true) bad.push("use_dora");
  if (json.fan_in_fan_out === true) bad.push("fan_in_fan_out");
  for (const k of ["rank_pattern", "alpha_pattern"]) {
    const v = json[k];
    if (v && typeof v === "object" && Object.keys(v).length > 0) bad.push(k);
  }
  const mts = json.modules_to_save;
  if (Array.isArray(mts) && mts.length > 0) bad.push(`modules_to_save ${JSON.stringify(mts)}`);
  if (json.layers_to_transform !== undefined && json.layers_to_transform !== null) {
    bad.push("layers_to_transform");
  }
  if (bad.length) throw new Error(`${where}: unsupported LoRA options: ${bad.join(", ")}`);
  const r = json.r;
  if (typeof r !== "number" || !Number.isInteger(r) || r < 1) {
    throw new Error(`${where}: "r" must be a positive integer, got ${JSON.stringify(r)}`);
  }
  const tm = json.target_modules;
  if (!(typeof tm === "string" || (Array.isArray(tm) && tm.every((x) => typeof x === "string")))) {
    throw new Error(`${where}: "target_modules" must be a list of names or a regex string`);
  }
  return {
    r,
    alpha: typeof json.lora_alpha === "number" ? json.lora_alpha : 8,
    dropout: typeof json.lora_dropout === "number" ? json.lora_dropout : 0,
    rslora: json.use_rslora === true,
    targetModules: tm as string[] | string,
    baseModelNameOrPath: json.base_model_name_or_path as string | undefined,
  };
}

/** PEFT's module matching: a name list matches exact names or ".name" suffixes; a string is a regex. */
export function peftTargetMatcher(targets: string[] | string): (path: string) => boolean {
  if (typeof targets === "string") {
    const re = new RegExp(`^(?:${targets})$`);
    return (path) => re.test(path);
  }
  return (path) => targets.some((t) => path === t || path.endsWith(`.${t}`));
}

async function findAdapterFile(dir: string): Promise<string> {
  for (const f of ["adapter_model.safetensors", "adapter_model.bin"]) {
    const p = join(dir, f);
    try {
      if ((await Deno.stat(p)).isFile) return p;
    } catch { /* try the next */ }
  }
  throw new Error(`${dir}: no adapter_model.safetensors or adapter_model.bin`);
}

/** The stored key of one LoRA matrix ("A" or "B") of a module, or null. */
export function loraKey(
  reader: { has(k: string): boolean },
  prefix: string,
  path: string,
  which: "A" | "B",
): string | null {
  for (
    const k of [
      `${prefix}${path}.lora_${which}.weight`,
      `${prefix}${path}.lora_${which}.default.weight`,
    ]
  ) {
    if (reader.has(k)) return k;
  }
  return null;
}

/**
 * Attach the adapter in `dir` to `text` and load its weights. Returns the parsed config.
 * Every tensor of the adapter file must be used (anything else is reported).
 */
export async function loadPeftAdapter(
  gpu: Gpu,
  text: Qwen2ForCausalLM,
  dir: string | ModelFolder,
): Promise<PeftLoraConfig> {
  const folder = asFolder(dir);
  const cfgPath = folder.where("adapter_config.json");
  const cfg = parsePeftConfig(
    JSON.parse(await requireText(folder, "adapter_config.json", "config")),
    cfgPath,
  );
  const reader = typeof dir === "string"
    ? await openTensors(await findAdapterFile(dir))
    : await openFolderTensors(folder, ["adapter_model.safetensors"]);
  try {
    text.attachLora(cfg, peftTargetMatcher(cfg.targetModules));
    await loadLoraTensors(gpu, text, reader, PEFT_PREFIX);
  } catch (e) {
    for (const [, l] of text.loraLinears()) removeAdapter(l);
    throw e;
  } finally {
    reader.close();
  }
  return cfg;
}

/**
 * Load A/B of every attached adapter from `reader`, keys `${prefix}${path}.lora_{A,B}[.default].weight`.
 * Throws for a missing tensor and for adapter tensors no attached module uses.
 */
export async function loadLoraTensors(
  gpu: Gpu,
  text: Qwen2ForCausalLM,
  reader: TensorReader,
  prefix: string,
): Promise<void> {
  const used = new Set<string>();
  for (const [path, lin] of text.loraLinears()) {
    for (const which of ["A", "B"] as const) {
      const key = loraKey(reader, prefix, path, which);
      if (!key) {
        throw new Error(
          `${reader.path}: LoRA tensor ${prefix}${path}.lora_${which}.weight is missing`,
        );
      }
      await loadParameter(gpu, which === "A" ? lin.lora!.A : lin.lora!.B, reader, key);
      used.add(key);
    }
  }
  const extra = reader.keys().filter((k) => k.startsWith(prefix) && !used.has(k));
  if (extra.length) {
    throw new Error(
      `${reader.path}: ${extra.length} adapter tensor(s) match no LoRA module of the model ` +
        `(${extra.slice(0, 4).join(", ")}${extra.length > 4 ? ", …" : ""})`,
    );
  }
}

/** Write `text`'s adapters as a PEFT directory (adapter_config.json + adapter_model.safetensors). */
export async function savePeftAdapter(
  text: Qwen2ForCausalLM,
  dir: string,
  opts: { baseModelNameOrPath?: string } = {},
): Promise<void> {
  const linears = text.loraLinears();
  if (linears.length === 0) throw new Error("savePeftAdapter: the model has no LoRA adapters");
  const l0 = linears[0][1].lora!;
  const targets = new Set<string>();
  for (const [path, lin] of linears) {
    const l = lin.lora!;
    if (
      l.r !== l0.r || l.alpha !== l0.alpha || l.dropout !== l0.dropout || !!l.rslora !== !!l0.rslora
    ) {
      throw new Error(`savePeftAdapter: adapters with different hyper-parameters (${path})`);
    }
    targets.add(path.slice(path.lastIndexOf(".") + 1));
  }
  const allLayers = linears.length === targets.size * text.layers.length;
  await Deno.mkdir(dir, { recursive: true });
  const config = {
    peft_type: "LORA",
    task_type: "CAUSAL_LM",
    base_model_name_or_path: opts.baseModelNameOrPath ?? null,
    r: l0.r,
    lora_alpha: l0.alpha,
    lora_dropout: l0.dropout,
    use_rslora: !!l0.rslora,
    bias: "none",
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    modules_to_save: null,
    // A subset of layers is written as a full-match regex over module paths.
    target_modules: allLayers
      ? LORA_TARGETS.filter((t) => targets.has(t))
      : linears.map(([p]) => p.replaceAll(".", "\\.")).join("|"),
  };
  await Deno.writeTextFile(
    join(dir, "adapter_config.json"),
    JSON.stringify(config, null, 2) + "\n",
  );
  const tensors = linears.flatMap(([path, lin]) => [
    [`${PEFT_PREFIX}${path}.lora_A.weight`, tensorToSafetensors(lin.lora!.A.value)] as const,
    [`${PEFT_PREFIX}${path}.lora_B.weight`, tensorToSafetensors(lin.lora!.B.value)] as const,
  ]);
  await writeSafetensors(
    join(dir, "adapter_model.safetensors"),
    Object.fromEntries(tensors),
    { format: "pt" },
  );
}
