// LoRA adapters on one base model in the server: two random PEFT adapters are served beside the
// base; /v1/models lists all three; a greedy answer through an adapter equals in-process generate
// with that adapter loaded on a separate model copy; concurrent requests for the base and both
// adapters (grouped per adapter between decode steps) each get their own solo answer.

import assert from "node:assert/strict";
import { join } from "node:path";
import OpenAI from "openai";
import { preprocessBytes } from "../src/data/image_processor.ts";
import { Gpu } from "../src/gpu/device.ts";
import { generate } from "../src/infer/generate.ts";
import { openSiqvl } from "../src/models/factory.ts";
import { loadPeftAdapter } from "../src/models/peft.ts";
import { removeAdapter } from "../src/nn/lora.ts";
import { writeSafetensors } from "../src/io/safetensors.ts";
import { AdapterSet } from "../src/serve/adapters.ts";
import { startServer } from "../src/serve/server.ts";
import { noGrad, Tensor } from "../src/tensor/mod.ts";
import { pngDataUrl, tinyCheckpoint } from "./serve_util.ts";
import { GPU_TEST, rand } from "./util.ts";

/** A PEFT adapter (r = 4, q/v/down projections) with random non-zero A and B. */
async function randomAdapter(
  dir: string,
  seed: number,
  hidden: number,
  inter: number,
  layers: number,
) {
  await Deno.mkdir(dir, { recursive: true });
  const r = 4;
  const tensors: Record<string, { dtype: "F32"; shape: number[]; data: Float32Array }> = {};
  let s = seed;
  const add = (path: string, inF: number, outF: number) => {
    const pre = `base_model.model.${path}`;
    tensors[`${pre}.lora_A.weight`] = {
      dtype: "F32",
      shape: [r, inF],
      data: rand(r * inF, s++, 0.1, 0.5),
    };
    tensors[`${pre}.lora_B.weight`] = {
      dtype: "F32",
      shape: [outF, r],
      data: rand(outF * r, s++, 0.1, 0.5),
    };
  };
  for (let i = 0; i < layers; i++) {
    add(`model.layers.${i}.self_attn.q_proj`, hidden, hidden);
    add(`model.layers.${i}.mlp.down_proj`, inter, hidden);
  }
  await writeSafetensors(join(dir, "adapter_model.safetensors"), tensors, { format: "pt" });
  await Deno.writeTextFile(
    join(dir, "adapter_config.json"),
    JSON.stringify({
      peft_type: "LORA",
      r,
      lora_alpha: 8,
      lora_dropout: 0,
      target_modules: ["q_proj", "down_proj"],
    }),
  );
}

Deno.test("serve adapters: per-request LoRA, grouped between decode steps", GPU_TEST, async () => {
  const { dir, bundle } = await tinyCheckpoint();
  const gpu = await Gpu.get();
  const c = bundle.model.config.text;
  const root = Deno.makeTempDirSync({ prefix: "siqvl-adapters-" });
  const dirs = [join(root, "a1"), join(root, "a2")];
  await randomAdapter(dirs[0], 100, c.hiddenSize, c.intermediateSize, c.numHiddenLayers);
  await randomAdapter(dirs[1], 200, c.hiddenSize, c.intermediateSize, c.numHiddenLayers);
  // The served model: its own copy, so the shared bundle stays adapter-free.
  const served = await openSiqvl(gpu, { checkpoint: dir });
  const adapters = await AdapterSet.load(gpu, served.model, [
    { name: "a1", dir: dirs[0] },
    { name: "a2", dir: dirs[1] },
  ]);
  const server = startServer(served, { modelName: "tiny", maxBatch: 8, adapters, maxContext: 128 });
  const client = new OpenAI({ apiKey: "x", baseURL: `${server.url}/v1`, maxRetries: 0 });
  try {
    const models = await client.models.list();
    assert.deepEqual(models.data.map((m) => m.id), ["tiny", "a1", "a2"]);
    const img = await pngDataUrl(33, 31, 0xff8000ff);
    const question = "What shape is this?";
    const ask = (model: string, i = 0) =>
      client.chat.completions.create({
        model,
        messages: [{
          role: "user",
          content: [
            { type: "image_url", image_url: { url: img.url } },
            { type: "text", text: `${question}${" ?".repeat(i)}` },
          ],
        }],
        temperature: 0,
        max_tokens: 10,
      }).then((r) => r.choices[0].message.content);

    // a1 through the server = generate with a1 loaded on the shared (adapter-free) bundle.
    const { model, processor } = bundle;
    await loadPeftAdapter(gpu, model.text, dirs[0]);
    try {
      const prompt = Array.from(processor.encodePrompt(question).inputIds);
      const px = await preprocessBytes(img.bytes, processor.image);
      const S = processor.image.size;
      const pixels = noGrad(() => Tensor.from(gpu, px, [1, 3, S, S]));
      const ref = await generate(model, { inputIds: [prompt], pixelValues: pixels }, {
        maxNewTokens: 10,
        stopTokenIds: processor.stopIds(),
        padTokenId: processor.ids.pad,
      });
      pixels.dispose();
      const stop = new Set(processor.stopIds());
      const want = processor.tokenizer.decode(ref.tokens[0].filter((t) => !stop.has(t)), {
        skipSpecialTokens: true,
      });
      assert.equal(await ask("a1"), want);
    } finally {
      for (const [, l] of model.text.loraLinears()) removeAdapter(l);
    }

    const names = ["tiny", "a1", "a2"];
    const solo: (string | null)[] = [];
    for (let i = 0; i < 9; i++) solo.push(await ask(names[i % 3], i));
    assert.notEqual(solo[0], solo[1], "an adapter changes the answer");
    assert.notEqual(solo[1], solo[2], "the two adapters differ");
    const together = await Promise.all(solo.map((_, i) => ask(names[i % 3], i)));
    assert.deepEqual(together, solo);
  } finally {
    await server.shutdown();
    adapters.dispose();
    served.dispose();
  }
});
