// deno run -A --unstable-webgpu scripts/hf_interop_export.ts FIXTURE_DIR OUT_DIR [--shard_bytes N]
//   [--lora]
// The project side of scripts/check_hf_interop.sh: builds the SiQ-VL model of a whole-model
// fixture (tiny-a), exports it as a final directory would be (config.json + model.safetensors in
// the SiQ-VL layout, auto_map + modeling code, vision/ and text/ HF folders), and writes the
// project's own numbers for the same inputs to OUT_DIR/project_outputs.safetensors:
//   logits [B, T, V] of a full forward over the fixture inputs (images included) and
//   greedy [N] tokens generated (KV cache) from the fixture's generation prompt.
// With --lora the fixture's PEFT adapter is attached and exported beside the base weights (as a
// stage-2 LoRA run writes it); the project's numbers are those of base + adapter.

import { join } from "node:path";
import { Gpu } from "../src/gpu/device.ts";
import { generate } from "../src/infer/generate.ts";
import { writeHfParts, writeHfRemoteCode } from "../src/io/hf_interop.ts";
import { writeSafetensors } from "../src/io/safetensors.ts";
import { saveSiqvl } from "../src/models/checkpoint.ts";
import { loadPeftAdapter } from "../src/models/peft.ts";
import { loadFixtureModel, readFixtureInputs } from "../src/parity/fixture.ts";
import { noGrad, Tensor, tidy } from "../src/tensor/mod.ts";

const [fixture, out, ...rest] = Deno.args;
if (!fixture || !out || fixture === "-h" || fixture === "--help") {
  console.log("usage: hf_interop_export.ts FIXTURE_DIR OUT_DIR [--shard_bytes N] [--lora]");
  Deno.exit(fixture ? 0 : 2);
}
const shardAt = rest.indexOf("--shard_bytes");
const maxShardBytes = shardAt >= 0 ? Number(rest[shardAt + 1]) : undefined;

const gpu = await Gpu.get();
const config = JSON.parse(await Deno.readTextFile(join(fixture, "siqvl_config.json")));
const model = await loadFixtureModel(gpu, fixture, config);
if (rest.includes("--lora")) await loadPeftAdapter(gpu, model.text, join(fixture, "lora"));
const inp = await readFixtureInputs(fixture);
const exportDir = join(out, "export");
await saveSiqvl(model, exportDir, { maxShardBytes });
await writeHfRemoteCode(exportDir);
await writeHfParts(exportDir);

// Full forward over the fixture batch (every row carries one image).
const pixels = Tensor.from(gpu, inp.pixelValues, inp.pixelShape);
const logitsT = noGrad(() =>
  tidy(() => {
    const { hidden } = model.forward({
      inputIds: inp.inputIds,
      batch: inp.batch,
      seqLen: inp.seqLen,
      pixelValues: pixels,
      attentionMask: inp.attentionMask,
    });
    return model.logits(hidden);
  })
);
const logits = await logitsT.readF32();
logitsT.dispose();

// Greedy decoding from the fixture's generation prompt (row, length) and that row's image.
const gen = config.generation as {
  prompt_row: number;
  prompt_length: number;
  max_new_tokens: number;
};
const per = inp.pixelValues.length / inp.pixelShape[0];
const row = gen.prompt_row;
const image = Tensor.from(
  gpu,
  inp.pixelValues.slice(row * per, (row + 1) * per),
  [1, ...inp.pixelShape.slice(1)],
);
const prompt = Array.from(
  inp.inputIds.subarray(row * inp.seqLen, row * inp.seqLen + gen.prompt_length),
);
const res = await generate(model, { inputIds: [prompt], pixelValues: image }, {
  maxNewTokens: gen.max_new_tokens,
  padTokenId: config.pad_token_id,
});
const V = model.config.text.vocabSize;
await writeSafetensors(join(out, "project_outputs.safetensors"), {
  logits: { dtype: "F32", shape: [inp.batch, inp.seqLen, V], data: logits },
  greedy: { dtype: "I32", shape: [res.tokens[0].length], data: Int32Array.from(res.tokens[0]) },
  prompt: { dtype: "I32", shape: [prompt.length], data: Int32Array.from(prompt) },
  prompt_image: {
    dtype: "F32",
    shape: [1, ...inp.pixelShape.slice(1)],
    data: inp.pixelValues.slice(row * per, (row + 1) * per),
  },
}, { format: "pt" });
pixels.dispose();
image.dispose();
model.dispose();
console.log(
  `exported ${exportDir}; project outputs in ${join(out, "project_outputs.safetensors")}`,
);
