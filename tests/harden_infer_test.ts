// Generation refuses non-finite logits (issue 15, class 8): greedy, sampling and beam search
// stop with an error naming the likely cause instead of emitting a token chosen from NaN.

import assert from "node:assert/strict";
import { gpu, GPU_TEST } from "./util.ts";
import { Tensor } from "../src/tensor/mod.ts";
import { generate } from "../src/infer/generate.ts";
import { assertFiniteLogits } from "../src/infer/finite_logits.ts";
import { loadFixtureModel, readFixtureInputs } from "../src/parity/fixture.ts";

const FIX = new URL("./fixtures/tiny-a/", import.meta.url).pathname;

Deno.test("assertFiniteLogits: names row, token, count and causes", () => {
  const ok = new Float32Array([0.5, -3, 1e30, -1e30]);
  assertFiniteLogits(ok, { phase: "prefill", vocab: 2, withImage: true });
  const bad = new Float32Array([0.5, -3, 1, NaN, Infinity, 2]);
  assert.throws(
    () => assertFiniteLogits(bad, { phase: "decode step 3", vocab: 3, withImage: false }),
    /non-finite logits at decode step 3 \(row 1, token id 0 is NaN; 2 non-finite values in all\)\. Likely cause: the model weights contain NaN\/Inf/,
  );
  assert.throws(
    () => assertFiniteLogits(bad, { phase: "prefill", vocab: 3, withImage: true }),
    /pixel values are not finite or not normalised/,
  );
});

Deno.test({
  name: "generate: NaN pixel values are refused for greedy, sampling and beam search",
  ...GPU_TEST,
  fn: async () => {
    const g = await gpu();
    const model = await loadFixtureModel(
      g,
      FIX,
      JSON.parse(Deno.readTextFileSync(FIX + "siqvl_config.json")),
    );
    const inp = await readFixtureInputs(FIX);
    const per = inp.pixelValues.length / inp.pixelShape[0];
    const px = inp.pixelValues.slice(0, per);
    px[7] = NaN;
    const pixels = Tensor.from(g, px, [1, ...inp.pixelShape.slice(1)]);
    const prompt = Array.from(inp.inputIds.subarray(0, inp.seqLen));
    try {
      for (
        const opts of [
          { doSample: false },
          { doSample: true, temperature: 0.7, seed: 1 },
          { doSample: false, numBeams: 2 },
        ]
      ) {
        await assert.rejects(
          generate(model, { inputIds: [prompt], pixelValues: pixels }, {
            maxNewTokens: 3,
            padTokenId: 0,
            ...opts,
          }),
          /generate: non-finite logits at prefill .*pixel values are not finite/,
          JSON.stringify(opts),
        );
      }
      // Seeds beyond 32 bits are refused, not wrapped onto another seed.
      await assert.rejects(
        generate(model, { inputIds: [prompt] }, {
          doSample: true,
          seed: 2 ** 32 + 5,
          padTokenId: 0,
        }),
        /seed must be an integer in \[0, 2\^32\), got 4294967301/,
      );
      // The same prompt with finite pixels still generates.
      const good = Tensor.from(g, inp.pixelValues.slice(0, per), [1, ...inp.pixelShape.slice(1)]);
      const res = await generate(model, { inputIds: [prompt], pixelValues: good }, {
        maxNewTokens: 2,
        padTokenId: 0,
      });
      assert.equal(res.tokens[0].length, 2);
      good.dispose();
    } finally {
      pixels.dispose();
      model.dispose();
    }
  },
});
