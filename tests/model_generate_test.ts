// Generation on the tiny-a model: a batch of prompts of different lengths (with and without
// images) equals each prompt alone and a full recompute without cache; stop ids, streaming,
// seeded sampling, repetition penalty and beam search.

import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { gpu, GPU_TEST } from "./util.ts";
import { noGrad, Tensor, tidy } from "../src/tensor/mod.ts";
import type { Gpu } from "../src/gpu/device.ts";
import { generate } from "../src/infer/generate.ts";
import { applyRepetitionPenalty, argmax, logSoftmax } from "../src/infer/sampling.ts";
import type { SiqvlModel } from "../src/models/siqvl.ts";
import { type FixtureInputs, loadFixtureModel, readFixtureInputs } from "../src/parity/fixture.ts";

const FIX = new URL("./fixtures/tiny-a/", import.meta.url).pathname;

let shared: { g: Gpu; model: SiqvlModel; inp: FixtureInputs } | null = null;
async function setup() {
  if (shared) return shared;
  const g = await gpu();
  const model = await loadFixtureModel(
    g,
    FIX,
    JSON.parse(Deno.readTextFileSync(FIX + "siqvl_config.json")),
  );
  shared = { g, model, inp: await readFixtureInputs(FIX) };
  return shared;
}

/** Prompt of fixture row `row` (its first `len` tokens) and that row's image. */
function rowPrompt(inp: FixtureInputs, row: number, len: number): number[] {
  return Array.from(inp.inputIds.subarray(row * inp.seqLen, row * inp.seqLen + len));
}

function images(g: Gpu, inp: FixtureInputs, which: number[]): Tensor {
  const per = inp.pixelValues.length / inp.pixelShape[0];
  const data = new Float32Array(which.length * per);
  which.forEach((w, i) => data.set(inp.pixelValues.subarray(w * per, (w + 1) * per), i * per));
  return Tensor.from(g, data, [which.length, ...inp.pixelShape.slice(1)]);
}

/** Logits of the last position of a full (cache-free) forward over `ids`. */
async function fullLastLogits(
  model: SiqvlModel,
  ids: number[],
  pixels?: Tensor,
): Promise<Float32Array> {
  const t = noGrad(() =>
    tidy(() => {
      const h =
        model.forward({ inputIds: ids, batch: 1, seqLen: ids.length, pixelValues: pixels }).hidden;
      return model.logits(h);
    })
  );
  const all = await t.readF32();
  t.dispose();
  const v = model.config.text.vocabSize;
  return all.slice((ids.length - 1) * v);
}

function maxRel(a: Float32Array, b: Float32Array): number {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num / den);
}

Deno.test(
  "generate: ragged batch with images = one by one = cache-free recompute",
  GPU_TEST,
  async () => {
    const { g, model, inp } = await setup();
    const p0 = rowPrompt(inp, 0, 21), p1 = rowPrompt(inp, 1, 16), p2 = [295, 86, 156, 10];
    const opts = { maxNewTokens: 6, stopTokenIds: [], keepStepLogits: true };
    const pix = images(g, inp, [0, 1]);
    const batch = await generate(model, { inputIds: [p0, p2, p1], pixelValues: pix }, opts);
    pix.dispose();
    const singles = [];
    for (const [p, img] of [[p0, 0], [p2, -1], [p1, 1]] as const) {
      const px = img >= 0 ? images(g, inp, [img]) : undefined;
      singles.push(await generate(model, { inputIds: [p], pixelValues: px }, opts));
      px?.dispose();
    }
    let worst = 0;
    singles.forEach((s, i) => {
      assertEquals(batch.tokens[i], s.tokens[0], `row ${i}`);
      s.stepLogits![0].forEach((
        l,
        k,
      ) => (worst = Math.max(worst, maxRel(batch.stepLogits![i][k], l))));
    });
    if (!(worst <= 1e-5)) throw new Error(`batched vs single step logits differ by ${worst}`);
    // Cache-free: the prompt plus the first k new tokens, full forward.
    let worstFull = 0;
    for (const [i, p, img] of [[0, p0, 0], [1, p2, -1]] as const) {
      const toks = batch.tokens[i];
      for (let k = 0; k < toks.length; k++) {
        const px = img >= 0 ? images(g, inp, [img]) : undefined;
        const l = await fullLastLogits(model, [...p, ...toks.slice(0, k)], px);
        px?.dispose();
        assertEquals(argmax(l), toks[k]);
        worstFull = Math.max(worstFull, maxRel(batch.stepLogits![i][k], l));
      }
    }
    if (!(worstFull <= 1e-5)) {
      throw new Error(
        `KV-cache vs full recompute logits differ by ${worstFull}`,
      );
    }
    console.log(
      `batched vs single ${worst.toExponential(2)}, cache vs recompute ${
        worstFull.toExponential(2)
      }`,
    );
  },
);

Deno.test(
  "generate: stop ids, streaming, seeded sampling, repetition penalty",
  GPU_TEST,
  async () => {
    const { model } = await setup();
    const prompt = [295, 86, 156, 10, 57];
    const greedy = await generate(model, { inputIds: [prompt] }, {
      maxNewTokens: 6,
      stopTokenIds: [],
    });
    assertEquals(greedy.finishReasons, ["length"]);
    // Stop at the third greedy token; the stream sees each token in order.
    const seen: [number, number, number][] = [];
    const stopped = await generate(model, { inputIds: [prompt, [295, 19]] }, {
      maxNewTokens: 6,
      stopTokenIds: [greedy.tokens[0][2]],
      onToken: (row, tok, step) => seen.push([row, tok, step]),
    });
    assertEquals(stopped.tokens[0], greedy.tokens[0].slice(0, 3));
    assertEquals(stopped.finishReasons[0], "stop");
    assertEquals(
      seen.filter(([r]) => r === 0).map(([, t, s]) => [t, s]),
      stopped.tokens[0].map((t, s) => [t, s]),
    );
    // Sampling: same seed → same tokens; top-k 1 → greedy.
    const s = { maxNewTokens: 6, stopTokenIds: [], doSample: true, temperature: 1.5, topP: 0.9 };
    const a = await generate(model, { inputIds: [prompt] }, { ...s, seed: 5 });
    const b = await generate(model, { inputIds: [prompt] }, { ...s, seed: 5 });
    assertEquals(a.tokens, b.tokens);
    const k1 = await generate(model, { inputIds: [prompt] }, { ...s, topK: 1, seed: 9 });
    assertEquals(k1.tokens, greedy.tokens);
    // Repetition penalty: every token is the argmax of its penalised step logits.
    const pen = await generate(model, { inputIds: [prompt] }, {
      maxNewTokens: 6,
      stopTokenIds: [],
      repetitionPenalty: 3,
      keepStepLogits: true,
    });
    const hist = [...prompt];
    pen.tokens[0].forEach((t, k) => {
      const l = pen.stepLogits![0][k].slice();
      applyRepetitionPenalty(l, hist, 3);
      assertEquals(t, argmax(l));
      hist.push(t);
    });
  },
);

Deno.test(
  "generate: beam search finds a sequence at least as likely as greedy",
  GPU_TEST,
  async () => {
    const { model } = await setup();
    const prompt = [295, 86, 156, 10, 57];
    const n = 4;
    const greedy = await generate(model, { inputIds: [prompt] }, {
      maxNewTokens: n,
      stopTokenIds: [],
    });
    const beam = await generate(model, { inputIds: [prompt, [295, 19, 84]] }, {
      maxNewTokens: n,
      stopTokenIds: [],
      numBeams: 3,
    });
    assertEquals(beam.tokens.map((t) => t.length), [n, n]);
    const score = async (toks: number[]) => {
      let s = 0;
      for (let k = 0; k < toks.length; k++) {
        s += logSoftmax(await fullLastLogits(model, [...prompt, ...toks.slice(0, k)]))[toks[k]];
      }
      return s;
    };
    const sg = await score(greedy.tokens[0]), sb = await score(beam.tokens[0]);
    console.log(`greedy log-prob ${sg.toFixed(4)}, beam(3) ${sb.toFixed(4)}`);
    if (!(sb >= sg - 1e-4)) throw new Error(`beam ${sb} < greedy ${sg}`);
    // One beam is greedy.
    const one = await generate(model, { inputIds: [prompt] }, {
      maxNewTokens: n,
      stopTokenIds: [],
      numBeams: 1,
    });
    assertEquals(one.tokens, greedy.tokens);
  },
);
