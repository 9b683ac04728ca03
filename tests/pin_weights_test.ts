// openSiqvl({ pinWeights }) — the inference CLIs' staged-once weights: the same greedy tokens as
// an unpinned model, fewer staging copies per decode step, and a weight replaced after pinning
// (mergeLora sets a new tensor) is read fresh, never from the stale staged copy.

import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { GPU_TEST } from "./util.ts";
import { tinyCheckpoint } from "./serve_util.ts";
import { Gpu } from "../src/gpu/device.ts";
import { openSiqvl, pinWeights, type SiqvlBundle } from "../src/models/factory.ts";
import { generate } from "../src/infer/generate.ts";
import { noGrad, scale, Tensor } from "../src/tensor/mod.ts";
import { useGpuKernels } from "../src/tensor/variants.ts";

async function greedy(b: SiqvlBundle, gpu: Gpu): Promise<number[]> {
  const model = b.model, size = b.processor.image.size;
  const px = new Float32Array(3 * size * size).map((_, i) => Math.sin(i * 0.37) * 0.8);
  const pixels = noGrad(() => Tensor.from(gpu, px, [1, 3, size, size], "f32"));
  try {
    const ids = Array.from(b.processor.encodePrompt("What shape is this?").inputIds);
    const r = await generate(model, { inputIds: [ids], pixelValues: pixels }, {
      maxNewTokens: 12,
      temperature: 0,
      stopTokenIds: [],
    });
    return r.tokens[0];
  } finally {
    pixels.dispose();
  }
}

/** Work items (dispatches and staging copies) recorded while `fn` runs. */
async function recorded(gpu: Gpu, fn: () => Promise<unknown>): Promise<number> {
  const before = gpu.dispatches;
  await fn();
  return gpu.dispatches - before;
}

Deno.test(
  "pinWeights: same greedy tokens, less staging, replaced weights read fresh",
  GPU_TEST,
  async () => {
    const gpu = await Gpu.get();
    const { dir } = await tinyCheckpoint();
    const plain = await openSiqvl(gpu, { checkpoint: dir });
    const pinned = await openSiqvl(gpu, { checkpoint: dir }, { pinWeights: true });
    try {
      const want = await greedy(plain, gpu);
      assertEquals(await greedy(pinned, gpu), want);
      // The GPU variants (gemm_tiled) read weights in place: there pinning saves nothing.
      const nPlain = await recorded(gpu, () => greedy(plain, gpu));
      const nPinned = await recorded(gpu, () => greedy(pinned, gpu));
      if (useGpuKernels(gpu) ? nPinned !== nPlain : !(nPinned < nPlain)) {
        throw new Error(`work with pinned weights ${nPinned}, without ${nPlain}`);
      }
      // Replace one projection in both models (as mergeLora does): the pinned model must follow.
      for (const m of [plain.model, pinned.model]) {
        const lin = m.text.layers[0].mlp.down_proj;
        lin.weight.set(noGrad(() => scale(lin.weight.value, -1.5)));
      }
      const changed = await greedy(plain, gpu);
      if (changed.join() === want.join()) throw new Error("the change must change the answer");
      assertEquals(await greedy(pinned, gpu), changed);
      // Pinning again after the change, then unpinning, keeps the answers.
      const unpin = pinWeights(pinned.model);
      assertEquals(await greedy(pinned, gpu), changed);
      unpin();
      assertEquals(await greedy(pinned, gpu), changed);
    } finally {
      plain.dispose();
      pinned.dispose();
    }
  },
);
