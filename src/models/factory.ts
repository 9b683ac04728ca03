// The one place that turns "a checkpoint" or "a vision id + a text id" into a ready model with
// its processor (tokenizer, chat template, image preprocessing). Training, generation,
// evaluation, serving, the demo, the parity runner and the benches all call `openSiqvl`.
//
//   { checkpoint }      a SiQ-VL directory (ours or the original's), a weights file beside its
//                       config.json, or a hub id "org/name[@rev]" (resolved through the HF cache)
//   { vision, text }    a fresh SiQ-VL: SigLIP + Qwen2 checkpoints (directories or hub ids) and a
//                       newly initialised projector; the tokenizer comes from the text model

import { dirname } from "node:path";
import { resolveModel } from "../io/on_demand.ts";
import type { Gpu } from "../gpu/device.ts";
import { SiqvlProcessor } from "../data/processor.ts";
import { TextTokenizer } from "../data/tokenizer.ts";
import {
  buildSiqvl,
  type BuildSiqvlOptions,
  loadSiqvl,
  type LoadSiqvlOptions,
} from "./checkpoint.ts";
import type { SiqvlModel } from "./siqvl.ts";
import { pinMatmulWeight, unpinMatmulWeight } from "../tensor/ops/matmul_pack.ts";
import { isModelFolder, type ModelFolder } from "../io/source.ts";

/**
 * Where a model comes from. `checkpoint` may also be a folder object (src/io/source.ts), e.g.
 * `httpFolder(url)` in a browser.
 */
export type ModelSource =
  | ({ checkpoint: string | ModelFolder } & LoadSiqvlOptions)
  | Omit<BuildSiqvlOptions, "imageTokenId" | "visionStartTokenId" | "visionEndTokenId">;

/** A model and what feeds it. */
export interface SiqvlBundle {
  model: SiqvlModel;
  processor: SiqvlProcessor;
  /** The local directory (or folder URL) the tokenizer and processor files were read from. */
  tokenizerFrom: string;
  /** Free the model's GPU memory. */
  dispose(): void;
}

/** Options of {@link openSiqvl}. */
export interface OpenOptions {
  /** Messages (hub resolution); default: none. */
  log?: (msg: string) => void;
  /**
   * Inference only: stage every 2-D weight into its matmul texture once and keep it there
   * ({@link pinWeights}), so prefill and each decode step read it without a copy. Costs one
   * staged copy of those weights; never for a model that is trained or has weights written later.
   */
  pinWeights?: boolean;
}

/**
 * Pin the 2-D weights `model` holds now (pinMatmulWeight: staged on first use, then reused by
 * every matmul until unpinned). A weight replaced later (mergeLora sets a new tensor) is simply
 * not pinned; one written in place (an optimizer step) would go stale, so this is for inference.
 * Returns the function that unpins them (frees the staged textures).
 */
export function pinWeights(model: SiqvlModel): () => void {
  const ws = model.namedParameters().map(([, p]) => p.value).filter((w) => w.ndim === 2);
  ws.forEach(pinMatmulWeight);
  return () => ws.forEach(unpinMatmulWeight);
}

/**
 * A local directory (or file) for a model argument: an existing path as is, else a hub id
 * (`org/name[@revision]`) through the hub cache, downloading what is missing unless offline.
 */
export async function resolveModelSource(
  spec: string,
  log: (s: string) => void = () => {},
): Promise<string> {
  try {
    Deno.statSync(spec);
    return spec;
  } catch { /* not a local path */ }
  log(`[siqvl] resolving ${spec} through the hub cache`);
  try {
    return await resolveModel(spec);
  } catch (e) {
    throw new Error(
      `cannot find model "${spec}": not a local path, and the hub lookup failed ` +
        `(${(e as Error).message}). Download it first or pass a local directory.`,
    );
  }
}

/** Load or build a SiQ-VL model with its processor. */
export async function openSiqvl(
  gpu: Gpu,
  source: ModelSource,
  opts: OpenOptions = {},
): Promise<SiqvlBundle> {
  const log = opts.log ?? (() => {});
  let model: SiqvlModel;
  let processor: SiqvlProcessor;
  let tokenizerFrom: string;
  if ("checkpoint" in source) {
    const { checkpoint, ...loadOpts } = source;
    let from: string | ModelFolder;
    if (isModelFolder(checkpoint)) {
      model = await loadSiqvl(gpu, checkpoint, loadOpts);
      from = checkpoint;
      tokenizerFrom = checkpoint.path;
    } else {
      const path = await resolveModelSource(checkpoint, log);
      model = await loadSiqvl(gpu, path, loadOpts);
      from = tokenizerFrom = Deno.statSync(path).isDirectory ? path : dirname(path);
    }
    try {
      processor = await SiqvlProcessor.fromPretrained(from, {
        tokensPerImage: model.imageTokensPerImage,
        imageSize: model.config.vision.imageSize,
      });
    } catch (e) {
      model.dispose();
      throw e;
    }
  } else {
    const vision = await resolveModelSource(source.vision, log);
    const text = await resolveModelSource(source.text, log);
    const tokenizer = await TextTokenizer.fromDir(text);
    model = await buildSiqvl(gpu, {
      ...source,
      vision,
      text,
      imageTokenId: tokenizer.requireId("<|image_pad|>"),
      visionStartTokenId: tokenizer.requireId("<|vision_start|>"),
      visionEndTokenId: tokenizer.requireId("<|vision_end|>"),
    });
    processor = new SiqvlProcessor({
      tokenizer,
      tokensPerImage: model.imageTokensPerImage,
      imageSize: model.config.vision.imageSize,
    });
    tokenizerFrom = text;
  }
  const unpin = opts.pinWeights ? pinWeights(model) : () => {};
  return {
    model,
    processor,
    tokenizerFrom,
    dispose: () => {
      unpin();
      model.dispose();
    },
  };
}
