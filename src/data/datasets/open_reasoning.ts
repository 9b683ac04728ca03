// Training and evaluation datasets of stages 3 and 4 for a `--data_path` value:
//
//   shapes_cot[:SIZE[:KINDS]]         generated chain-of-thought scenes (KINDS: count_color,
//                                     left_right, leftmost; a kind listed twice is drawn twice
//                                     as often); the eval set comes from an independent seed
//   shapes_preference[:SIZE[:KINDS]]  generated preference pairs about the same scenes
//   *.json / *.jsonl / *.parquet      LLaVA-style conversations (answers carrying their
//                                     reasoning, e.g. LLaVA-CoT-100k), or column-mapped
//                                     reasoning / preference records (records.ts)
//   anything else                     as stages 1–2 (FineVision parquet subsets, open.ts)
// Splits as in stages 1–2: the eval set is the first E usable samples of a second instance.

import { readTextBounded } from "../../io/file.ts";
import type { ReasoningFormat } from "../reasoning.ts";
import { COT_KINDS, type CotKind, CotShapesDataset } from "./cot_shapes.ts";
import { LlavaDataset } from "./llava.ts";
import { type DataSpec, openDatasets } from "./open.ts";
import { ShapesPreferenceDataset } from "./preference.ts";
import { type ColumnMap, RecordsDataset } from "./records.ts";
import { splitTrainEval } from "./split.ts";
import type { Dataset } from "./types.ts";

/** What the stage needs from its records. */
export type RecordKind = "reasoning" | "preference";

/** Options of {@link openReasoningDatasets}. */
export interface ReasoningDataSpec extends DataSpec {
  kind: RecordKind;
  format: ReasoningFormat;
  columns: ColumnMap;
}

/** Which flag a record kind is needed by, for messages. */
const NEEDED_BY: Record<RecordKind, string> = {
  reasoning: "--stage 3 / --rl grpo (records with answers)",
  preference: "--po_loss (records with chosen and rejected)",
};

/** Whether a .json/.jsonl file holds LLaVA conversations (its first record has them). */
async function isLlavaFile(file: string): Promise<boolean> {
  if (!/\.jsonl?$/i.test(file)) return false;
  const t = (await readTextBounded(file, "dataset")).trimStart();
  try {
    const first = t.startsWith("[") ? JSON.parse(t)[0] : JSON.parse(t.split("\n")[0]);
    return Boolean(first) && typeof first === "object" && "conversations" in first;
  } catch {
    return false; // the records reader reports where the JSON is bad
  }
}

/** Train and eval datasets for a stage-3/4 `--data_path`. */
export async function openReasoningDatasets(
  spec: ReasoningDataSpec,
): Promise<{ train: Dataset; eval: Dataset | null; description: string }> {
  const p = spec.dataPath, E = spec.maxEvalSamples;
  const gen = /^(shapes_cot|shapes_preference)(?::|$)/.exec(p);
  if (gen) {
    const which = gen[1];
    if (which === "shapes_cot" && spec.kind === "preference") {
      throw new Error(
        `--data_path ${p} has no chosen/rejected pairs; ${NEEDED_BY.preference} needs ` +
          "shapes_preference or a preference record file",
      );
    }
    if (which === "shapes_preference" && spec.kind === "reasoning") {
      throw new Error(
        `--data_path ${p} holds preference pairs; ${NEEDED_BY.reasoning} needs shapes_cot or ` +
          "a record file with answers",
      );
    }
    const [, sz, kindList] = p.split(":");
    const size = sz ? Number(sz) : spec.imageSize;
    if (!Number.isInteger(size) || size < 24) throw new Error(`--data_path ${p}: bad image size`);
    const kinds = kindList ? kindList.split(",") as CotKind[] : undefined;
    if (kinds?.some((k) => !COT_KINDS.includes(k))) {
      throw new Error(`--data_path ${p}: question kinds are ${COT_KINDS.join(", ")}`);
    }
    const make = (seed: number, length?: number) =>
      which === "shapes_cot"
        ? new CotShapesDataset({ seed, imageSize: size, length, format: spec.format, kinds })
        : new ShapesPreferenceDataset({
          seed,
          imageSize: size,
          length,
          format: spec.format,
          kinds,
        });
    return {
      train: make(spec.seed, spec.maxSamples ?? undefined),
      eval: E > 0 ? make((spec.seed ^ 0x5eed1e55) >>> 0, E) : null,
      description: `generated ${which} (${size}px, seed ${spec.seed}, ${spec.format})`,
    };
  }
  const split = { maxSamples: spec.maxSamples ?? undefined, maxEvalSamples: E };
  if (/\.(jsonl?|parquet)$/i.test(p)) {
    if (spec.kind === "reasoning" && await isLlavaFile(p)) {
      const { train, eval: ev } = await splitTrainEval(
        () => LlavaDataset.load({ file: p, seed: spec.seed }),
        split,
      );
      return { train, eval: ev ?? null, description: `LLaVA-style ${p} (answers as written)` };
    }
    const open = () =>
      RecordsDataset.load({
        file: p,
        kind: spec.kind,
        columns: spec.columns,
        format: spec.format,
        seed: spec.seed,
      });
    await open(); // column errors before anything else
    const { train, eval: ev } = await splitTrainEval(open, split);
    return { train, eval: ev ?? null, description: `${spec.kind} records ${p}` };
  }
  if (spec.kind === "preference") {
    throw new Error(
      `--data_path ${p}: ${NEEDED_BY.preference} needs shapes_preference or a .json/.jsonl/` +
        ".parquet file with chosen and rejected columns",
    );
  }
  return await openDatasets(spec);
}
