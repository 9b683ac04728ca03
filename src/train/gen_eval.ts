// Generation evaluation: answer fixed held-out questions with the model (KV-cache decoding,
// greedy, sampled or beam search) and compare with the references.
//
// The prompt is the processor's generation prompt (system prompt if any, user turn with the image
// placeholder, assistant header). Generation stops at <|im_end|> (or the tokenizer's EOS) or after
// max_new_tokens; the answer is the decoded text without special tokens, trimmed. "Exact match"
// compares answers normalised to lower case without surrounding punctuation or whitespace.

import type { SiqvlProcessor } from "../data/processor.ts";
import type { ImagePool } from "../data/image_pool.ts";
import type { ImageSource } from "../data/image.ts";
import { generate } from "../infer/generate.ts";
import type { SiqvlModel } from "../models/siqvl.ts";
import { noGrad, Tensor } from "../tensor/tensor.ts";

/** One question to answer. */
export interface GenSample {
  id: string;
  image: ImageSource;
  question: string;
  reference: string;
}

/** One generated answer. */
export interface GenRow {
  id: string;
  question: string;
  reference: string;
  answer: string;
  exact: boolean;
  finish: "stop" | "length";
}

/** Decoding settings of a generation eval. */
export interface GenSettings {
  maxNewTokens: number;
  /** 0 = greedy. */
  temperature: number;
  numBeams: number;
  repetitionPenalty?: number;
  seed?: number;
  /** Prompts per generate() call. */
  batchSize?: number;
  /** Called with each finished row (printing as they come). */
  onRow?: (row: GenRow) => void;
}

/** Lower-case, trimmed, without surrounding punctuation. */
export function normalizeAnswer(s: string): string {
  return s.trim().toLowerCase().replace(/^[\s"'.,;:!?()[\]]+|[\s"'.,;:!?()[\]]+$/g, "");
}

/** Answer every sample; returns the rows and the exact-match fraction. */
export async function generationEval(
  model: SiqvlModel,
  processor: SiqvlProcessor,
  pool: ImagePool,
  samples: GenSample[],
  s: GenSettings,
): Promise<{ rows: GenRow[]; exactMatch: number; seconds: number }> {
  const t0 = performance.now();
  const rows: GenRow[] = [];
  const bs = Math.max(1, s.batchSize ?? 8);
  const wasTraining = model.training;
  model.eval();
  try {
    for (let i = 0; i < samples.length; i += bs) {
      const chunk = samples.slice(i, i + bs);
      const pixels = await Promise.all(chunk.map((c) => pool.process(c.image, processor.image)));
      const S = processor.image.size;
      const flat = new Float32Array(pixels.length * 3 * S * S);
      pixels.forEach((p, k) => flat.set(p, k * 3 * S * S));
      const px = noGrad(() => Tensor.from(model.gpu, flat, [chunk.length, 3, S, S], "f32"));
      try {
        const prompts = chunk.map((c) => Array.from(processor.encodePrompt(c.question).inputIds));
        const res = await generate(model, { inputIds: prompts, pixelValues: px }, {
          maxNewTokens: s.maxNewTokens,
          doSample: s.temperature > 0,
          temperature: s.temperature > 0 ? s.temperature : undefined,
          numBeams: s.numBeams,
          repetitionPenalty: s.repetitionPenalty ?? 1,
          stopTokenIds: processor.stopIds(),
          padTokenId: processor.ids.pad,
          seed: (s.seed ?? 0) + i,
        });
        chunk.forEach((c, k) => {
          const answer = processor.tokenizer.decode(res.tokens[k], { skipSpecialTokens: true })
            .trim();
          const row: GenRow = {
            id: c.id,
            question: c.question,
            reference: c.reference,
            answer,
            exact: normalizeAnswer(answer) === normalizeAnswer(c.reference),
            finish: res.finishReasons[k],
          };
          rows.push(row);
          s.onRow?.(row);
        });
      } finally {
        px.dispose();
      }
    }
  } finally {
    model.train(wasTraining);
  }
  const exact = rows.filter((r) => r.exact).length;
  return {
    rows,
    exactMatch: rows.length ? exact / rows.length : 0,
    seconds: (performance.now() - t0) / 1000,
  };
}
