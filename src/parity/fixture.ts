// Reference-fixture runner: loads a fixture directory in the tiny-a format (siqvl_config.json,
// vision/ text/ projector.safetensors lora/ inputs.safetensors) and computes what
// expected.safetensors holds, under the same names.
//
// The work is split into named sections run in order; each adds tensors to `ctx.out`:
//   forward   vision.*, projector.*, fused.inputs_embeds, lm.* (intermediates, logits, loss)
//   grad      grad.projector.* (stage 1) and grad.model.* / grad.lm_head.weight (stage 2, full)
//   generate  generate.prompt_*, generate.tokens, generate.step_logits (greedy, KV cache)
//   lora      lora.logits, lora.loss, grad.base_model.model.*.lora_{A,B}.weight
// More sections (the train.* sequences) register with `registerFixtureSection`.

import { removeAdapter } from "../nn/lora.ts";
import { join } from "node:path";
import { readJson } from "../io/file.ts";
import type { Gpu } from "../gpu/device.ts";
import { openTensors } from "../io/reader.ts";
import { keep, noGrad, Tensor, tidy } from "../tensor/mod.ts";
import { generate } from "../infer/generate.ts";
import { loadParameter } from "../nn/load.ts";
import { buildSiqvl } from "../models/checkpoint.ts";
import { loadPeftAdapter, PEFT_PREFIX } from "../models/peft.ts";
import type { SiqvlModel } from "../models/siqvl.ts";
import type { Tap } from "../models/siglip.ts";

/** A computed tensor (written as F32 or, for integers, I64 like the reference). */
export interface FixtureTensor {
  dtype: "F32" | "I64";
  shape: number[];
  data: Float32Array | Int32Array;
}

/** The fixture's inputs.safetensors, on the CPU. */
export interface FixtureInputs {
  batch: number;
  seqLen: number;
  inputIds: Int32Array;
  attentionMask: Int32Array;
  labels: Int32Array;
  /** [I, C, S, S] */
  pixelShape: number[];
  pixelValues: Float32Array;
}

/** State shared by the sections. */
export interface FixtureContext {
  gpu: Gpu;
  dir: string;
  /** siqvl_config.json */
  config: Record<string, unknown>;
  inputs: FixtureInputs;
  /** The model with the fixture's initial weights (sections may change trainability/adapters). */
  model: SiqvlModel;
  /** A fresh model with the initial weights (for sections that update weights). */
  loadModel(): Promise<SiqvlModel>;
  /** Images as a GPU tensor (caller disposes). */
  pixels(): Tensor;
  out: Map<string, FixtureTensor>;
  /** Record an output (f32 or integer values). */
  put(name: string, shape: number[], data: Float32Array | Int32Array): void;
}

/** One step of the runner. */
export type FixtureSection = (ctx: FixtureContext) => Promise<void>;

const sections: [string, FixtureSection][] = [];

/** Add (or replace) a named section; new sections run after the existing ones. */
export function registerFixtureSection(name: string, run: FixtureSection): void {
  const i = sections.findIndex(([n]) => n === name);
  if (i >= 0) sections[i] = [name, run];
  else sections.push([name, run]);
}

/** Names of the registered sections, in run order. */
export function fixtureSections(): string[] {
  return sections.map(([n]) => n);
}

async function readInts(
  path: string,
  name: string,
): Promise<{ data: Int32Array; shape: number[] }> {
  const r = await openTensors(path);
  try {
    if (!r.has(name)) throw new Error(`${path}: tensor "${name}" is missing`);
    const f = await r.readF32(name);
    const data = Int32Array.from(f);
    return { data, shape: r.info(name).shape };
  } finally {
    r.close();
  }
}

/** Read inputs.safetensors. */
export async function readFixtureInputs(dir: string): Promise<FixtureInputs> {
  const path = join(dir, "inputs.safetensors");
  const ids = await readInts(path, "input_ids");
  const [b, t] = ids.shape;
  if (ids.shape.length !== 2) {
    throw new Error(`${path}: input_ids must be [B, T], got [${ids.shape}]`);
  }
  const mask = await readInts(path, "attention_mask");
  const labels = await readInts(path, "labels");
  for (const [n, x] of [["attention_mask", mask], ["labels", labels]] as const) {
    if (x.data.length !== b * t) throw new Error(`${path}: ${n} [${x.shape}] is not [${b}, ${t}]`);
  }
  const r = await openTensors(path);
  try {
    return {
      batch: b,
      seqLen: t,
      inputIds: ids.data,
      attentionMask: mask.data,
      labels: labels.data,
      pixelShape: r.info("pixel_values").shape,
      pixelValues: await r.readF32("pixel_values"),
    };
  } finally {
    r.close();
  }
}

/** Build the fixture's model: vision/, text/, projector.safetensors with siqvl_config.json's settings. */
export async function loadFixtureModel(
  gpu: Gpu,
  dir: string,
  config: Record<string, unknown>,
): Promise<SiqvlModel> {
  const pj = (config.projector ?? {}) as Record<string, unknown>;
  const model = await buildSiqvl(gpu, {
    vision: join(dir, (config.vision_dir as string) ?? "vision"),
    text: join(dir, (config.text_dir as string) ?? "text"),
    projector: {
      factor: (pj.pixel_shuffle_factor as number | "auto") ?? 2,
      layerNorm: pj.use_layernorm === true,
      layerNormEps: typeof pj.layernorm_eps === "number" ? pj.layernorm_eps : 1e-5,
    },
    imageTokenId: config.image_token_id as number,
  });
  // The projector file names its LayerNorm "projector.norm.*" (or layer_norm / layernorm / ln).
  const path = join(dir, (config.projector_file as string) ?? "projector.safetensors");
  const r = await openTensors(path);
  const names = new Map<string, string>();
  try {
    for (const [name, p] of model.projector.namedParameters("projector.")) {
      const alts = [name];
      const m = /^projector\.norm\.(weight|bias)$/.exec(name);
      if (m) {
        for (const a of ["layer_norm", "layernorm", "ln"]) alts.push(`projector.${a}.${m[1]}`);
      }
      if (name === "projector.proj.weight") alts.push("projector.mlp.weight");
      const key = alts.find((k) => r.has(k));
      if (!key) throw new Error(`${path}: no tensor for ${name} (tried ${alts.join(", ")})`);
      await loadParameter(gpu, p, r, key);
      names.set(name, key);
    }
  } finally {
    r.close();
  }
  fixtureNames.set(model, names);
  return model;
}

const fixtureNames = new WeakMap<SiqvlModel, Map<string, string>>();

/**
 * The fixture-file name of a model parameter: "projector.proj.weight" (as in
 * projector.safetensors), "model.layers.0.…" / "lm_head.weight" (text/), "vision_model.…"
 * (vision/) — the names expected.safetensors uses after "grad." or "train.<s>.final.".
 */
export function fixtureParamName(model: SiqvlModel, canonical: string): string {
  const p = fixtureNames.get(model)?.get(canonical);
  if (p) return p;
  if (canonical.startsWith("text_model.")) return canonical.slice("text_model.".length);
  if (canonical.startsWith("vision_model.")) return canonical.slice("vision_model.".length);
  return canonical;
}

/** Read the fixture directory and load its model. */
export async function openFixture(gpu: Gpu, dir: string): Promise<FixtureContext> {
  const config = await readJson(join(dir, "siqvl_config.json"));
  const inputs = await readFixtureInputs(dir);
  const model = await loadFixtureModel(gpu, dir, config);
  const out = new Map<string, FixtureTensor>();
  return {
    gpu,
    dir,
    config,
    inputs,
    model,
    loadModel: () => loadFixtureModel(gpu, dir, config),
    pixels: () => Tensor.from(gpu, inputs.pixelValues, inputs.pixelShape, "f32"),
    out,
    put(name, shape, data) {
      out.set(name, { dtype: data instanceof Int32Array ? "I64" : "F32", shape, data });
    },
  };
}

/** Run the sections (all, or the named ones) over a fixture directory; returns the outputs. */
export async function runFixture(
  gpu: Gpu,
  dir: string,
  only?: string[],
): Promise<Map<string, FixtureTensor>> {
  for (const n of only ?? []) {
    if (!sections.some(([s]) => s === n)) {
      throw new Error(`unknown fixture section "${n}" (known: ${fixtureSections().join(", ")})`);
    }
  }
  const ctx = await openFixture(gpu, dir);
  try {
    for (const [name, run] of sections) {
      if (!only || only.includes(name)) await run(ctx);
    }
  } finally {
    ctx.model.dispose();
  }
  return ctx.out;
}

// ---- sections ----

/** A tap that keeps a handle on every activation it sees (caller reads and disposes). */
function collector(): { tap: Tap; taps: Map<string, Tensor> } {
  const taps = new Map<string, Tensor>();
  return {
    taps,
    tap: (name, t) => {
      taps.get(name)?.dispose();
      taps.set(name, keep(t.detach()));
    },
  };
}

async function putTensor(ctx: FixtureContext, name: string, t: Tensor): Promise<void> {
  ctx.put(name, [...t.shape], await t.readF32());
}

function modelInputs(ctx: FixtureContext, pixels: Tensor) {
  const i = ctx.inputs;
  return {
    inputIds: i.inputIds,
    batch: i.batch,
    seqLen: i.seqLen,
    attentionMask: i.attentionMask,
    labels: i.labels,
    pixelValues: pixels,
  };
}

registerFixtureSection("forward", async (ctx) => {
  const { tap, taps } = collector();
  const pixels = ctx.pixels();
  const res = noGrad(() =>
    tidy(() => {
      const o = ctx.model.forward(modelInputs(ctx, pixels), tap);
      return { loss: o.loss!, logits: ctx.model.logits(o.hidden), n: o.numLossTokens };
    })
  );
  for (const [name, t] of taps) {
    await putTensor(ctx, name, t);
    t.dispose();
  }
  await putTensor(ctx, "lm.logits", res.logits);
  ctx.put("lm.loss", [], await res.loss.readF32());
  ctx.put("lm.num_loss_tokens", [], Int32Array.of(res.n));
  for (const t of [res.loss, res.logits, pixels]) t.dispose();
});

registerFixtureSection("grad", async (ctx) => {
  // Stage 1 (projector) and stage 2 (full LM) gradients come from one backward: a parameter's
  // gradient does not depend on which others are trainable.
  const m = ctx.model;
  m.projector.setTrainable(true);
  m.text.setTrainable(true);
  const pixels = ctx.pixels();
  const loss = tidy(() => m.forward(modelInputs(ctx, pixels)).loss!);
  loss.backward();
  for (const [name, p] of m.namedParameters()) {
    const g = p.value.grad;
    if (!p.trainable) continue;
    if (!g) throw new Error(`fixture grad: parameter ${name} received no gradient`);
    await putTensor(ctx, `grad.${fixtureParamName(m, name)}`, g);
  }
  m.setTrainable(false);
  loss.dispose();
  pixels.dispose();
});

registerFixtureSection("generate", async (ctx) => {
  const g = (ctx.config.generation ?? {}) as Record<string, unknown>;
  const row = (g.prompt_row as number) ?? 0;
  const len = g.prompt_length as number;
  const maxNew = (g.max_new_tokens as number) ?? 8;
  const { inputIds, seqLen, pixelShape, pixelValues } = ctx.inputs;
  if (!(len > 0 && len <= seqLen)) {
    throw new Error(`fixture generation: prompt_length ${len} is invalid`);
  }
  const prompt = Array.from(inputIds.subarray(row * seqLen, row * seqLen + len));
  // The row's images: those after the image tokens of earlier rows.
  const imageId = ctx.model.config.imageTokenId, n = ctx.model.imageTokensPerImage;
  const before = inputIds.subarray(0, row * seqLen).filter((v) => v === imageId).length;
  const count = prompt.filter((v) => v === imageId).length;
  if (before % n || count % n) throw new Error("fixture generation: prompt cuts through an image");
  const per = pixelValues.length / pixelShape[0];
  let pixels: Tensor | undefined;
  if (count) {
    const img = pixelValues.subarray((before / n) * per, (before / n + count / n) * per);
    pixels = Tensor.from(ctx.gpu, img, [count / n, ...pixelShape.slice(1)], "f32");
    const emb = noGrad(() => ctx.model.embedInputs(prompt, 1, len, pixels));
    await putTensor(ctx, "generate.prompt_inputs_embeds", emb);
    emb.dispose();
  }
  ctx.put("generate.prompt_input_ids", [1, len], Int32Array.from(prompt));
  const eos = ctx.config.eos_token_id as number | undefined;
  const res = await generate(ctx.model, { inputIds: [prompt], pixelValues: pixels }, {
    maxNewTokens: maxNew,
    stopTokenIds: g.stop_at_eos && eos !== undefined ? [eos] : [],
    keepStepLogits: true,
  });
  pixels?.dispose();
  const toks = res.tokens[0];
  ctx.put("generate.tokens", [1, toks.length], Int32Array.from(toks));
  const steps = res.stepLogits![0];
  const v = steps[0].length;
  const all = new Float32Array(steps.length * v);
  steps.forEach((s, i) => all.set(s, i * v));
  ctx.put("generate.step_logits", [steps.length, v], all);
});

registerFixtureSection("lora", async (ctx) => {
  const lc = ctx.config.lora as Record<string, unknown> | undefined;
  if (!lc) return;
  const m = ctx.model;
  await loadPeftAdapter(ctx.gpu, m.text, join(ctx.dir, (lc.dir as string) ?? "lora"));
  try {
    for (const [, p] of m.text.loraParameters()) p.setTrainable(true);
    const pixels = ctx.pixels();
    const { loss, logits } = tidy(() => {
      const o = m.forward(modelInputs(ctx, pixels));
      return { loss: o.loss!, logits: noGrad(() => m.logits(o.hidden)) };
    });
    await putTensor(ctx, "lora.logits", logits);
    ctx.put("lora.loss", [], await loss.readF32());
    loss.backward();
    for (const [name, p] of m.text.loraParameters()) {
      const g = p.value.grad;
      if (!g) throw new Error(`fixture lora: ${name} received no gradient`);
      await putTensor(ctx, `grad.${PEFT_PREFIX}${name}`, g);
    }
    for (const t of [loss, logits, pixels]) t.dispose();
  } finally {
    for (const [, lin] of m.text.loraLinears()) removeAdapter(lin);
  }
});

// ---- comparison with expected.safetensors ----

/** One compared tensor: relative L2 error ‖got − want‖ / ‖want‖ and the largest |got − want|. */
export interface FixtureError {
  name: string;
  relErr: number;
  maxAbs: number;
  /** Integer tensors: whether every value is equal. */
  exact?: boolean;
}

/**
 * Compare computed outputs with the reference file. Logits are compared only where
 * attention_mask == 1. Names missing from either side are skipped.
 */
export async function compareFixture(
  out: Map<string, FixtureTensor>,
  expectedPath: string,
  inputs: FixtureInputs,
): Promise<FixtureError[]> {
  const r = await openTensors(expectedPath);
  const rows: FixtureError[] = [];
  try {
    for (const [name, got] of out) {
      if (!r.has(name)) continue;
      const info = r.info(name);
      if (info.shape.join() !== got.shape.join()) {
        throw new Error(`${name}: computed [${got.shape}] but the reference is [${info.shape}]`);
      }
      let want: ArrayLike<number> = await r.readF32(name);
      let g: ArrayLike<number> = got.data;
      if (/\.logits$/.test(name) && got.shape.length === 3) {
        const v = got.shape[2];
        const keepRows = [...inputs.attentionMask].flatMap((m, i) => (m === 1 ? [i] : []));
        const pick = (x: ArrayLike<number>) => {
          const o = new Float64Array(keepRows.length * v);
          keepRows.forEach((row, j) => {
            for (let c = 0; c < v; c++) o[j * v + c] = x[row * v + c];
          });
          return o;
        };
        want = pick(want);
        g = pick(g);
      }
      let num = 0, den = 0, maxAbs = 0;
      for (let i = 0; i < want.length; i++) {
        const d = g[i] - want[i];
        num += d * d;
        den += want[i] * want[i];
        maxAbs = Math.max(maxAbs, Number.isNaN(d) ? Infinity : Math.abs(d));
      }
      const row: FixtureError = {
        name,
        relErr: Math.sqrt(num) / Math.max(Math.sqrt(den), 1e-30),
        maxAbs,
      };
      if (got.dtype === "I64") row.exact = maxAbs === 0;
      rows.push(row);
    }
  } finally {
    r.close();
  }
  return rows;
}
