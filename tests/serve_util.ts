// Shared setup of the serving tests: a tiny random SiQ-VL with a small BPE tokenizer, saved as a
// checkpoint directory and opened through openSiqvl, and PNG data URLs.

import { join } from "node:path";
import { Image } from "imagescript";
import { SIQVL_CHAT_TEMPLATE } from "../src/data/chat_template.ts";
import { Gpu } from "../src/gpu/device.ts";
import { openSiqvl, type SiqvlBundle } from "../src/models/factory.ts";
import { saveSiqvl } from "../src/models/checkpoint.ts";
import { smallTokenizerConfig, trainByteLevelBpe } from "../src/demo/small_tokenizer.ts";
import { writeRandomText, writeRandomVision } from "../src/demo/tiny_models.ts";

const CORPUS = [
  "system",
  "user",
  "assistant",
  "\n",
  "What shape is this? A red square on a white background.",
  "What color is the shape? It is blue, green, yellow or red.",
  "Describe this image. There is one triangle, one circle and two squares.",
  "Answer briefly: the answer is yes, no, left, right, top or bottom.",
];

let shared: Promise<{ dir: string; bundle: SiqvlBundle }> | null = null;

/** A tiny checkpoint directory and the bundle opened from it (shared within a test file). */
export function tinyCheckpoint(): Promise<{ dir: string; bundle: SiqvlBundle }> {
  shared ??= (async () => {
    const root = Deno.makeTempDirSync({ prefix: "siqvl-serve-" });
    const tok = trainByteLevelBpe(CORPUS, { maxMerges: 120 });
    const text = join(root, "text"), vision = join(root, "vision");
    const ids = tok.specialIds;
    // Large weights so that greedy answers of the random model vary from token to token.
    const init = { seed: 5, posStd: 0.02, residualScale: 0.5, embedStd: 1, projStd: 0.3 };
    await writeRandomText(text, {
      vocabSize: tok.vocabSize,
      hidden: 64,
      layers: 2,
      heads: 4,
      kvHeads: 2,
      intermediate: 128,
      eosTokenId: ids["<|im_end|>"],
      padTokenId: ids["<|endoftext|>"],
      maxPositions: 512,
    }, init);
    await Deno.writeTextFile(join(text, "tokenizer.json"), JSON.stringify(tok.tokenizerJson));
    await Deno.writeTextFile(
      join(text, "tokenizer_config.json"),
      JSON.stringify(smallTokenizerConfig(tok, SIQVL_CHAT_TEMPLATE)),
    );
    await writeRandomVision(
      vision,
      { imageSize: 32, patchSize: 8, hidden: 32, layers: 1, heads: 2, intermediate: 64 },
      { ...init, seed: 6, embedStd: 0.1, projStd: 0.05 },
    );
    const gpu = await Gpu.get();
    const fresh = await openSiqvl(gpu, { vision, text, projector: { factor: 2 } });
    const dir = join(root, "ckpt");
    await saveSiqvl(fresh.model, dir, { processorFrom: text });
    fresh.dispose();
    return { dir, bundle: await openSiqvl(gpu, { checkpoint: dir }) };
  })();
  return shared;
}

/** A w×h PNG with a coloured square, as a data: URL, and its bytes. */
export async function pngDataUrl(
  w: number,
  h: number,
  rgba = 0xff0000ff,
): Promise<{ url: string; bytes: Uint8Array }> {
  const img = new Image(w, h);
  img.fill(0xffffffff);
  img.drawBox(Math.floor(w / 4), Math.floor(h / 4), Math.ceil(w / 2), Math.ceil(h / 2), rgba);
  const bytes = await img.encode();
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return { url: `data:image/png;base64,${btoa(bin)}`, bytes };
}
