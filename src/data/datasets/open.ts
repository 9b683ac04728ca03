// Training and evaluation datasets for a `--data_path` value:
//
//   shapes[:SIZE[:KINDS]]   generated shapes (infinite; the eval set comes from an independent seed)
//   *.json / *.jsonl        LLaVA-style records
//   a folder or a hub id    FineVision parquet subsets (a hub repo is downloaded once into the
//                           Hugging Face cache, as training reads every shard once per pass)
//
// Splits (as the original: select(max_samples), then hold out max_eval_samples): the eval set is
// the first E usable samples of a second instance of the dataset, and the training stream skips
// those E samples at the start of every pass.

import { LlavaDataset } from "./llava.ts";
import { QUESTION_KINDS, type QuestionKind, ShapesDataset } from "./shapes.ts";
import { FineVisionDataset } from "./finevision.ts";
import { cachedHubClient } from "./hub_cache.ts";
import { splitTrainEval } from "./split.ts";
import type { Dataset } from "./types.ts";

/** Options of {@link openDatasets}. */
export interface DataSpec {
  dataPath: string;
  subSets: string[];
  subSetsWeights: number[] | null;
  seed: number;
  maxSamples: number | null;
  maxEvalSamples: number;
  imageSize: number;
  /** LLaVA: allow image paths outside the JSON's folder. */
  allowOutside?: boolean;
}

/** Train and eval datasets for `--data_path`. */
export async function openDatasets(
  spec: DataSpec,
): Promise<{ train: Dataset; eval: Dataset | null; description: string }> {
  const E = spec.maxEvalSamples;
  const p = spec.dataPath;
  if (p === "shapes" || p.startsWith("shapes:")) {
    // shapes[:<image size>[:<question kinds, comma-separated; repeating one weights it>]]
    const [, sz, kindList] = p.split(":");
    const size = sz ? Number(sz) : spec.imageSize;
    if (!Number.isInteger(size) || size < 16) throw new Error(`--data_path ${p}: bad image size`);
    const kinds = kindList ? kindList.split(",") as QuestionKind[] : undefined;
    if (kinds?.some((k) => !QUESTION_KINDS.includes(k))) {
      throw new Error(`--data_path ${p}: question kinds are ${QUESTION_KINDS.join(", ")}`);
    }
    const train = new ShapesDataset({
      seed: spec.seed,
      imageSize: size,
      length: spec.maxSamples ?? undefined,
      kinds,
    });
    const ev = E > 0
      ? new ShapesDataset({
        seed: (spec.seed ^ 0x5eed1e55) >>> 0,
        imageSize: size,
        length: E,
        kinds,
      })
      : null;
    return { train, eval: ev, description: `generated shapes (${size}px, seed ${spec.seed})` };
  }
  const split = { maxSamples: spec.maxSamples ?? undefined, maxEvalSamples: E };
  if (/\.jsonl?$/i.test(p)) {
    const { train, eval: ev } = await splitTrainEval(
      () => LlavaDataset.load({ file: p, seed: spec.seed, allowOutside: spec.allowOutside }),
      split,
    );
    return { train, eval: ev ?? null, description: `LLaVA-style ${p}` };
  }
  // FineVision: a local folder of <subset>/*.parquet, else a hub dataset repo (downloaded once
  // into the Hugging Face cache, as training reads every shard once per pass).
  const isDir = await Deno.stat(p).then((st) => st.isDirectory, () => false);
  const location = isDir ? { dir: p } : { hub: cachedHubClient(), repo: p };
  const { train, eval: ev } = await splitTrainEval(
    () =>
      FineVisionDataset.open({
        location,
        subsets: spec.subSets,
        weights: spec.subSetsWeights ?? undefined,
        seed: spec.seed,
      }),
    split,
  );
  return {
    train,
    eval: ev ?? null,
    description: `FineVision ${p} (${spec.subSets.join(", ")})`,
  };
}
