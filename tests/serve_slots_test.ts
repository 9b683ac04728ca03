// The batched KV cache of continuous batching on the tiny-a fixture model: sequences that join at
// different steps (one prefilled alone, two prefilled together with left padding) and leave in
// the middle (the last row moving into the freed one) get, at every step, the same logits and
// tokens as generate() gives each prompt on its own.

import assert from "node:assert/strict";
import { gpu, GPU_TEST, relErr } from "./util.ts";
import { generate } from "../src/infer/generate.ts";
import type { GenerateResult } from "../src/infer/decode.ts";
import { PrefillJob } from "../src/infer/prefill_job.ts";
import { batchDecodeStep, BatchKV } from "../src/infer/slots.ts";
import { argmax } from "../src/infer/sampling.ts";
import { loadFixtureModel, readFixtureInputs } from "../src/parity/fixture.ts";

const FIX = new URL("./fixtures/tiny-a/", import.meta.url).pathname;

Deno.test("slots: rows joining and leaving = each prompt alone", GPU_TEST, async () => {
  const g = await gpu();
  const cfgJson = JSON.parse(Deno.readTextFileSync(FIX + "siqvl_config.json"));
  const model = await loadFixtureModel(g, FIX, cfgJson);
  const inp = await readFixtureInputs(FIX);
  // Text-only prompts of three lengths (ids from the fixture's first row, no image tokens).
  const imageId = model.config.imageTokenId;
  const text = Array.from(inp.inputIds.subarray(0, inp.seqLen)).filter((t) => t !== imageId);
  const prompts = [text.slice(0, 9), text.slice(2, 7), text.slice(1, 12)];
  const steps = [7, 6, 5];
  const ref: GenerateResult[] = [];
  for (let i = 0; i < 3; i++) {
    ref.push(
      await generate(model, { inputIds: [prompts[i]] }, {
        maxNewTokens: steps[i],
        stopTokenIds: [],
        keepStepLogits: true,
      }),
    );
  }
  const c = model.config.text;
  const vocab = c.vocabSize;
  const kv = new BatchKV(g, c.numHiddenLayers, 4, 32, c.numKeyValueHeads, c.headDim);
  const rows: { seq: number; step: number }[] = [];
  const check = (seq: number, step: number, logits: Float32Array) => {
    const want = ref[seq].stepLogits![0][step];
    assert.ok(relErr(logits, want) < 1e-4, `seq ${seq} step ${step}: ${relErr(logits, want)}`);
    assert.equal(argmax(logits), ref[seq].tokens[0][step]);
  };
  const admit = async (seqs: number[]) => {
    const pf = new PrefillJob(model, seqs.map((s) => prompts[s]), undefined, 0);
    let logits: Float32Array | null = null;
    while (!logits) logits = await pf.step(4); // chunked: 4 positions per step
    seqs.forEach((s, i) => {
      check(s, 0, logits!.slice(i * vocab, (i + 1) * vocab));
      kv.join(pf.cache, i, pf.padding(i));
      rows.push({ seq: s, step: 1 });
    });
    pf.dispose();
  };
  const decode = async () => {
    const tokens = rows.map((r) => ref[r.seq].tokens[0][r.step - 1]);
    const logits = await batchDecodeStep(model, kv, tokens);
    rows.forEach((r, i) => check(r.seq, r.step++, logits.slice(i * vocab, (i + 1) * vocab)));
    // Finished rows leave (highest index first).
    for (let i = rows.length - 1; i >= 0; i--) {
      if (rows[i].step < steps[rows[i].seq]) continue;
      const moved = kv.leave(i);
      if (moved >= 0) rows[i] = rows[moved];
      rows.pop();
    }
  };
  await admit([0]);
  await decode();
  await decode();
  await admit([1, 2]); // two newcomers prefilled together (left-padded)
  while (rows.length) await decode();
  assert.equal(kv.rows, 0);
  kv.dispose();
  model.dispose();
});
