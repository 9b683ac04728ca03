// deno run -A --unstable-webgpu cli/generate.ts --checkpoint DIR --image PATH|URL --question TEXT
// Answers a question about an image with a trained SiQ-VL checkpoint, streaming the answer as it
// is generated (KV-cache decoding; sampling, greedy or beam search).

import { numFlag, parseFlags } from "./flags.ts";
import { extractAnswer, parseReasoningFormat } from "../src/data/reasoning.ts";
import { announce } from "../src/gpu/announce.ts";
import { preprocessBytes } from "../src/data/image_processor.ts";
import { setMaxImagePixels } from "../src/data/image.ts";
import { MissingFileError, readBounded, setReadLimitMiB } from "../src/io/file.ts";
import { generate } from "../src/infer/generate.ts";
import { openSiqvl } from "../src/models/factory.ts";
import { noGrad, Tensor } from "../src/tensor/tensor.ts";
import { describeProfile, profileSection, ProfileSession } from "../src/gpu/profile_session.ts";

const HELP = `Usage: deno run -A --unstable-webgpu cli/generate.ts --checkpoint DIR --image PATH|URL
         [--question TEXT] [flags]

Answers a question about an image with a SiQ-VL checkpoint (a stage directory written by
cli/train.ts, or an original SiQ-VL checkpoint), streaming the answer.

  --checkpoint DIR          model directory (config.json + weights, tokenizer, processor files)
  --image PATH|URL          image file (JPEG/PNG/GIF) or http(s) URL
  --question TEXT           default "What is shown in the image?"
  --max_new_tokens N        default 64
  --temperature T           sampling temperature (default 0.7)
  --top_k K, --top_p P      sampling filters (default off)
  --no_sample               greedy decoding instead of sampling
  --num_beams N             beam search (deterministic; needs --no_sample)
  --repetition_penalty R    HF-style penalty over prompt and answer tokens (default 1.0)
  --seed N                  sampling seed, 0 … 2^32-1 (default 0)
  --reasoning_format F      think | llava-cot | plain | none: how the model writes reasoning
                            and answer (default think; text without tags is all answer)
  --no_show_reasoning       print only the final answer, read by --reasoning_format (default:
                            stream everything, reasoning included)
  --max_file_mb N           raise the size cap of files read (default 64 MiB for images)
  --max_image_pixels N      raise the decoded image size limit (default 89478485)
  --profile                 profile the generation (src/gpu/profile.ts): after the answer, tables
                            per kernel family, model part (vision, projector, llm.*), section
                            (prefill: image + prompt up to the first token; decode: the rest) and
                            kernel — dispatches, GPU time, bytes bound, share; results unchanged
  --profile_out FILE        where --profile writes its JSON (default generate-profile.json)
  -h, --help`;

const OPTIONS = {
  checkpoint: { type: "string" },
  image: { type: "string" },
  question: { type: "string" },
  max_new_tokens: { type: "string" },
  temperature: { type: "string" },
  top_k: { type: "string" },
  top_p: { type: "string" },
  sample: { type: "boolean" },
  num_beams: { type: "string" },
  repetition_penalty: { type: "string" },
  seed: { type: "string" },
  max_file_mb: { type: "string" },
  max_image_pixels: { type: "string" },
  reasoning_format: { type: "string" },
  show_reasoning: { type: "boolean" },
  profile: { type: "boolean" },
  profile_out: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

/** Read an image from a path or an http(s) URL. */
export async function readImageBytes(src: string): Promise<Uint8Array> {
  if (/^https?:\/\//i.test(src)) {
    const res = await fetch(src);
    if (!res.ok) throw new Error(`--image ${src}: HTTP ${res.status}`);
    return new Uint8Array(await res.arrayBuffer());
  }
  try {
    return await readBounded(src, "image");
  } catch (e) {
    if (e instanceof MissingFileError) throw new Error(`--image ${src}: no such file`);
    throw new Error(`--image: ${(e as Error).message}`);
  }
}

/** Parse flags, load, generate; writes the streamed answer to `out`. Returns the answer. */
export async function main(
  argv: string[],
  out: (s: string) => void = (s) => void Deno.stdout.writeSync(new TextEncoder().encode(s)),
): Promise<string> {
  const norm = argv.map((a) =>
    a === "--no_sample" ? "--no-sample" : a === "--no_show_reasoning" ? "--no-show_reasoning" : a
  );
  const v = parseFlags(norm, OPTIONS, true);
  if (v.help) {
    out(HELP + "\n");
    return "";
  }
  if (!v.checkpoint) throw new Error("--checkpoint is required; see --help");
  if (!v.image) throw new Error("--image is required; see --help");
  const question = v.question ?? "What is shown in the image?";
  const maxNew = numFlag(
    "max_new_tokens",
    v.max_new_tokens,
    64,
    (x) => Number.isInteger(x) && x > 0,
  );
  const temperature = numFlag("temperature", v.temperature, 0.7, (x) => x > 0);
  const topK = numFlag("top_k", v.top_k, 0, (x) => Number.isInteger(x) && x >= 0);
  const topP = numFlag("top_p", v.top_p, 1, (x) => x > 0 && x <= 1);
  const beams = numFlag("num_beams", v.num_beams, 1, (x) => Number.isInteger(x) && x >= 1);
  const penalty = numFlag("repetition_penalty", v.repetition_penalty, 1, (x) => x > 0);
  const seed = numFlag("seed", v.seed, 0, (x) => Number.isInteger(x) && x >= 0 && x <= 0xffffffff);
  setReadLimitMiB(numFlag("max_file_mb", v.max_file_mb, NaN, (x) => x > 0) || undefined);
  setMaxImagePixels(
    numFlag("max_image_pixels", v.max_image_pixels, NaN, (x) => Number.isSafeInteger(x) && x > 0) ||
      undefined,
  );
  const format = parseReasoningFormat(v.reasoning_format ?? "think");
  const showReasoning = v.show_reasoning ?? true;
  if (v.profile_out !== undefined && !v.profile) {
    throw new Error("--profile_out has no effect without --profile");
  }
  if (v.profile_out === "") throw new Error("--profile_out needs a file name");
  const profileOut = v.profile_out ?? "generate-profile.json";
  const sample = v.sample ?? true;
  if (beams > 1 && sample) {
    throw new Error("--num_beams > 1 is deterministic beam search: add --no_sample");
  }
  if (!sample && (v.temperature !== undefined || v.top_k !== undefined || v.top_p !== undefined)) {
    throw new Error("--temperature/--top_k/--top_p need sampling (drop --no_sample)");
  }

  const gpu = await announce();
  const { model, processor } = await openSiqvl(gpu, { checkpoint: v.checkpoint }, {
    pinWeights: true,
  });
  try {
    const px = await preprocessBytes(await readImageBytes(v.image), processor.image);
    const S = processor.image.size;
    // --profile: from the image upload on (prefill: up to the first token; decode: the rest).
    const prof = v.profile ? await ProfileSession.start(gpu, model) : null;
    if (prof) profileSection(beams > 1 ? "beam search" : "prefill");
    const pixels = noGrad(() => Tensor.from(gpu, px, [1, 3, S, S], "f32"));
    const prompt = Array.from(processor.encodePrompt(question).inputIds);
    const tok = processor.tokenizer;
    const stop = new Set(processor.stopIds());
    const gen: number[] = [];
    let shown = "";
    const stream = () => {
      if (!showReasoning) return; // the answer is printed once it is known
      const text = tok.decode(gen.filter((t) => !stop.has(t)), { skipSpecialTokens: true });
      // Print only what is settled (an incomplete UTF-8 sequence decodes to U+FFFD).
      const settled = text.endsWith("\uFFFD") ? text.replace(/\uFFFD+$/, "") : text;
      if (settled.startsWith(shown) && settled.length > shown.length) {
        out(settled.slice(shown.length));
        shown = settled;
      }
    };
    try {
      const res = await generate(model, { inputIds: [prompt], pixelValues: pixels }, {
        maxNewTokens: maxNew,
        doSample: sample && beams === 1,
        temperature: sample ? temperature : undefined,
        topK: sample && topK > 0 ? topK : undefined,
        topP: sample ? topP : undefined,
        numBeams: beams,
        repetitionPenalty: penalty,
        stopTokenIds: [...stop],
        padTokenId: processor.ids.pad,
        seed,
        onToken: (_row, t) => {
          if (gen.length === 0 && prof) profileSection("decode");
          gen.push(t);
          stream();
        },
      });
      const answer = tok.decode(res.tokens[0].filter((t) => !stop.has(t)), {
        skipSpecialTokens: true,
      }).trim();
      let printed = answer;
      if (!showReasoning) {
        printed = extractAnswer(answer, format);
        out(printed + "\n");
      } else {
        if (beams > 1) out(answer);
        else if (shown.trim() !== answer) out(answer.slice(shown.trim().length));
        out("\n");
      }
      const report = await prof?.stop(profileOut);
      if (report) out(describeProfile("[generate] profile", report, profileOut) + "\n");
      return printed;
    } finally {
      await prof?.stop(null);
      pixels.dispose();
    }
  } finally {
    model.dispose();
  }
}

if (import.meta.main) {
  try {
    await main(Deno.args);
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
