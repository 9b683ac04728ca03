// Exports PyTorch users load with one line (issue 15, class 12; check of class 15): the SiQ-VL
// layout gains auto_map + the shipped modeling code, torch_dtype from the stored tensors and
// vision_use_head: false; vision/ and text/ are standard SiglipVisionModel / Qwen2ForCausalLM
// folders. With SIQVL_HF_ENV set (a setup_hf.sh directory) and Python torch present, the
// developer check scripts/check_hf_interop.sh runs too.

import assert from "node:assert/strict";
import { join } from "node:path";
import { gpu, GPU_TEST } from "./util.ts";
import {
  HF_AUTO_MAP,
  HF_CODE_FILES,
  writeHfParts,
  writeHfRemoteCode,
} from "../src/io/hf_interop.ts";
import { openTensors } from "../src/io/reader.ts";
import { saveSiqvl } from "../src/models/checkpoint.ts";
import { loadFixtureModel } from "../src/parity/fixture.ts";

const FIX = new URL("./fixtures/tiny-a/", import.meta.url).pathname;
const ROOT = new URL("../", import.meta.url).pathname;

Deno.test({
  name: "HF export: auto_map + modeling code, torch_dtype as stored, standard vision/ and text/",
  ...GPU_TEST,
  fn: async () => {
    const g = await gpu();
    const model = await loadFixtureModel(
      g,
      FIX,
      JSON.parse(Deno.readTextFileSync(FIX + "siqvl_config.json")),
    );
    const dir = await Deno.makeTempDir({ prefix: "siqvl_hf_export_" });
    try {
      for (const [dtype, torch] of [["F32", "float32"], ["BF16", "bfloat16"]] as const) {
        const out = join(dir, dtype);
        await saveSiqvl(model, out, { dtype });
        await writeHfRemoteCode(out);
        const parts = await writeHfParts(out);
        const cfg = JSON.parse(await Deno.readTextFile(join(out, "config.json")));
        assert.deepEqual(cfg.auto_map, HF_AUTO_MAP);
        assert.equal(cfg.model_type, "siq_vl");
        assert.equal(cfg.torch_dtype, torch, "torch_dtype matches the stored tensors");
        assert.equal(cfg.text_config.torch_dtype, torch);
        assert.equal(cfg.vision_config.vision_use_head, false);
        for (const f of HF_CODE_FILES) {
          const text = await Deno.readTextFile(join(out, f));
          assert.match(text, /^from transformers/m, `${f} imports transformers only`);
          assert.doesNotMatch(text, /^(import|from) (?!torch|transformers|math|\.)/m, f);
        }
        const v = await openTensors(parts.vision);
        assert.ok(v.has("vision_model.embeddings.patch_embedding.weight"));
        assert.ok(v.keys().every((k) => k.startsWith("vision_model.") && !k.includes(".head.")));
        v.close();
        const vc = JSON.parse(await Deno.readTextFile(join(parts.vision, "config.json")));
        assert.equal(vc.model_type, "siglip_vision_model");
        assert.equal(vc.vision_use_head, false);
        assert.equal(vc.torch_dtype, torch);
        const t = await openTensors(parts.text);
        assert.ok(t.has("model.embed_tokens.weight") && t.has("model.norm.weight"));
        assert.ok(t.keys().every((k) => k.startsWith("model.") || k === "lm_head.weight"));
        t.close();
        const tc = JSON.parse(await Deno.readTextFile(join(parts.text, "config.json")));
        assert.deepEqual([tc.model_type, tc.architectures[0]], ["qwen2", "Qwen2ForCausalLM"]);
      }
    } finally {
      model.dispose();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "scripts/check_hf_interop.sh: PyTorch logits and greedy tokens match (needs SIQVL_HF_ENV)",
  ignore: !Deno.env.get("SIQVL_HF_ENV"),
  fn: async () => {
    const res = await new Deno.Command("bash", {
      args: [join(ROOT, "scripts/check_hf_interop.sh"), FIX],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(res.stdout);
    assert.ok(res.success, text + new TextDecoder().decode(res.stderr));
    if (!/SKIPPED/.test(text)) assert.equal(text.match(/interop check passed/g)?.length, 3, text);
  },
});
