// LoRA on the tiny-a model: fresh adapters are a no-op, adapters can be switched off, PEFT
// save → load, gradient checkpointing gives the same gradients, dropout only in training mode
// and with the same mask when a checkpointed layer is recomputed.

import { removeAdapter } from "../src/nn/lora.ts";
import { deepStrictEqual as assertEquals, notDeepStrictEqual } from "node:assert/strict";
import { join } from "node:path";
import { assertClose, gpu, GPU_TEST } from "./util.ts";
import type { Gpu } from "../src/gpu/device.ts";
import { openTensors } from "../src/io/reader.ts";
import { noGrad, Tensor, tidy } from "../src/tensor/mod.ts";
import { setDropoutSeed } from "../src/nn/dropout.ts";
import { loadPeftAdapter, savePeftAdapter } from "../src/models/peft.ts";
import type { SiqvlModel } from "../src/models/siqvl.ts";
import { type FixtureInputs, loadFixtureModel, readFixtureInputs } from "../src/parity/fixture.ts";

const FIX = new URL("./fixtures/tiny-a/", import.meta.url).pathname;
const config = () => JSON.parse(Deno.readTextFileSync(FIX + "siqvl_config.json"));

async function expected(name: string): Promise<Float32Array> {
  const r = await openTensors(FIX + "expected.safetensors");
  const v = await r.readF32(name);
  r.close();
  return v;
}

/** Forward (+ backward when something is trainable); returns the loss value. */
async function step(
  g: Gpu,
  model: SiqvlModel,
  inp: FixtureInputs,
  backward = false,
): Promise<number> {
  const pixels = Tensor.from(g, inp.pixelValues, inp.pixelShape);
  const run = () =>
    tidy(() =>
      model.forward({
        inputIds: inp.inputIds,
        batch: inp.batch,
        seqLen: inp.seqLen,
        attentionMask: inp.attentionMask,
        labels: inp.labels,
        pixelValues: pixels,
      }).loss!
    );
  const loss = backward ? run() : noGrad(run);
  if (backward) loss.backward();
  const v = await loss.item();
  loss.dispose();
  pixels.dispose();
  return v;
}

async function loraGrads(model: SiqvlModel): Promise<Map<string, Float32Array>> {
  const out = new Map<string, Float32Array>();
  for (const [name, p] of model.text.loraParameters()) {
    out.set(name, await p.value.grad!.read() as Float32Array);
    p.value.grad!.dispose();
    p.value.grad = null;
  }
  return out;
}

function setLoraTrainable(model: SiqvlModel): void {
  for (const [, p] of model.text.loraParameters()) p.setTrainable(true);
}

Deno.test(
  "LoRA: fresh adapters are a no-op, switching off gives the base, PEFT round trip",
  GPU_TEST,
  async () => {
    const g = await gpu();
    const inp = await readFixtureInputs(FIX);
    const base = (await expected("lm.loss"))[0], lora = (await expected("lora.loss"))[0];
    const model = await loadFixtureModel(g, FIX, config());
    const plain = await step(g, model, inp);
    model.text.attachLora({ r: 8, alpha: 16, dropout: 0.05 }, ["q_proj", "v_proj"]);
    assertEquals(model.text.loraLinears().length, 4);
    model.initialize(g, 1); // only the new A (uniform) and B (zeros) are unloaded
    assertEquals(await step(g, model, inp), plain);
    for (const [, l] of model.text.loraLinears()) removeAdapter(l);
    await loadPeftAdapter(g, model.text, join(FIX, "lora"));
    const withLora = await step(g, model, inp);
    assertClose([withLora], [lora], 1e-5, "LoRA loss");
    model.text.setLoraEnabled(false);
    assertEquals(await step(g, model, inp), plain);
    assertClose([plain], [base], 1e-5, "base loss");
    model.text.setLoraEnabled(true);
    const tmp = await Deno.makeTempDir({ prefix: "siqvl-lora-" });
    try {
      await savePeftAdapter(model.text, tmp, { baseModelNameOrPath: "tiny-a/text" });
      const cfg = JSON.parse(await Deno.readTextFile(join(tmp, "adapter_config.json")));
      assertEquals([cfg.r, cfg.lora_alpha, cfg.target_modules.length], [4, 8, 7]);
      const other = await loadFixtureModel(g, FIX, config());
      await loadPeftAdapter(g, other.text, tmp);
      assertEquals(await step(g, other, inp), withLora);
      other.dispose();
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
    model.dispose();
  },
);

Deno.test("LoRA: gradient checkpointing and dropout masks", GPU_TEST, async () => {
  const g = await gpu();
  const inp = await readFixtureInputs(FIX);
  const model = await loadFixtureModel(g, FIX, config());
  await loadPeftAdapter(g, model.text, join(FIX, "lora"));
  setLoraTrainable(model);
  await step(g, model, inp, true);
  const plain = await loraGrads(model);
  model.text.gradientCheckpointing = true;
  await step(g, model, inp, true);
  const ckpt = await loraGrads(model);
  for (const [k, v] of plain) {
    assertClose(ckpt.get(k)!, v, 1e-6, `checkpointed ${k}`);
    const want = await expected(`grad.base_model.model.${k}`);
    assertClose(v, want, 1e-4, k);
  }
  // Dropout: training mode draws a new mask per forward; eval mode has none.
  for (const [, l] of model.text.loraLinears()) l.lora!.dropout = 0.3;
  model.train();
  setDropoutSeed(7);
  const l1 = await step(g, model, inp);
  const l2 = await step(g, model, inp);
  notDeepStrictEqual(l1, l2);
  model.eval();
  assertClose([await step(g, model, inp)], await expected("lora.loss"), 1e-5, "eval loss");
  // The recompute of a checkpointed layer sees the forward's mask: same gradients as without.
  model.train();
  setDropoutSeed(11);
  model.text.gradientCheckpointing = false;
  const d1 = await step(g, model, inp, true);
  const g1 = await loraGrads(model);
  setDropoutSeed(11);
  model.text.gradientCheckpointing = true;
  const d2 = await step(g, model, inp, true);
  const g2 = await loraGrads(model);
  assertEquals(d1, d2);
  for (const [k, v] of g1) assertClose(g2.get(k)!, v, 1e-6, `dropout + checkpointing ${k}`);
  model.dispose();
});
