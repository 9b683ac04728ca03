// One question about one image, answered with the model: the page's chat turn and the Deno side
// of `deno task test:browser` call this same function, so the two runs differ only in the
// runtime underneath (Deno + wgpu/naga vs Chromium + Dawn/Tint).

import type { RgbImage } from "../data/image.ts";
import { preprocessRgb } from "../data/image_processor.ts";
import { generate } from "../infer/generate.ts";
import type { SiqvlBundle } from "../models/factory.ts";
import { noGrad, Tensor } from "../tensor/mod.ts";

/** Options of {@link ask}. */
export interface AskOptions {
  /** Longest answer in tokens (default 32). */
  maxNewTokens?: number;
  /** 0 = greedy (default); above 0 samples with this temperature. */
  temperature?: number;
  seed?: number;
  /** Each new token and the decoded answer so far (streaming). */
  onToken?: (token: number, textSoFar: string) => void;
}

/** An answer with its tokens and timings. */
export interface AskResult {
  tokens: number[];
  text: string;
  finish: "stop" | "length";
  promptTokens: number;
  prefillSeconds: number;
  decodeSeconds: number;
  /** Generated tokens per second over prefill + decode. */
  tokensPerSecond: number;
}

/** Answer `question` about `image` (greedy unless a temperature is given). */
export async function ask(
  bundle: SiqvlBundle,
  image: RgbImage,
  question: string,
  opts: AskOptions = {},
): Promise<AskResult> {
  const { model, processor } = bundle;
  const S = processor.image.size;
  // pixels: [1, 3, S, S]
  const pixels = preprocessRgb(image, processor.image);
  const px = noGrad(() => Tensor.from(model.gpu, pixels, [1, 3, S, S], "f32"));
  const tokens: number[] = [];
  const wasTraining = model.training;
  model.eval();
  try {
    const prompt = Array.from(processor.encodePrompt(question).inputIds);
    const t = opts.temperature ?? 0;
    const res = await generate(model, { inputIds: [prompt], pixelValues: px }, {
      maxNewTokens: opts.maxNewTokens ?? 32,
      doSample: t > 0,
      temperature: t > 0 ? t : undefined,
      seed: opts.seed ?? 0,
      stopTokenIds: processor.stopIds(),
      padTokenId: processor.ids.pad,
      onToken: (_row, tok) => {
        tokens.push(tok);
        opts.onToken?.(tok, decodeAnswer(bundle, tokens));
      },
    });
    const s = res.stats;
    const seconds = s.prefillSeconds + s.decodeSeconds;
    return {
      tokens: res.tokens[0],
      text: decodeAnswer(bundle, res.tokens[0]),
      finish: res.finishReasons[0],
      promptTokens: s.promptTokens,
      prefillSeconds: s.prefillSeconds,
      decodeSeconds: s.decodeSeconds,
      tokensPerSecond: seconds > 0 ? res.tokens[0].length / seconds : 0,
    };
  } finally {
    model.train(wasTraining);
    px.dispose();
  }
}

/** The answer text of generated tokens (special tokens dropped, trimmed). */
export function decodeAnswer(bundle: SiqvlBundle, tokens: number[]): string {
  return bundle.processor.tokenizer.decode(tokens, { skipSpecialTokens: true }).trim();
}
