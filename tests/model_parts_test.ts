// Model building blocks that need no matmul: patchify, config parsing, checkpoint key mapping,
// token choice.

import { deepStrictEqual as assertEquals, throws } from "node:assert/strict";
import { assertClose, gpu, GPU_TEST, rand, rng } from "./util.ts";
import { noGrad, patchify, Tensor } from "../src/tensor/mod.ts";
import {
  parseQwen2Config,
  parseSiglipVisionConfig,
  parseSiqvlConfig,
  qwen2ConfigJson,
  siglipVisionConfigJson,
  siqvlConfigJson,
} from "../src/models/configs.ts";
import { detectLayout, mapCheckpointKeys, savedKey } from "../src/models/checkpoint_keys.ts";
import { imageTokensPerImage, Projector, resolveFactor } from "../src/models/projector.ts";
import { parsePeftConfig, peftTargetMatcher } from "../src/models/peft.ts";
import { applyRepetitionPenalty, argmax, chooseToken } from "../src/infer/sampling.ts";

/** `fn` throws an error whose message contains `part`. */
function assertThrows(fn: () => unknown, part: string): void {
  throws(fn, (e: Error) => e.message.includes(part));
}

const FIX = new URL("./fixtures/tiny-a/", import.meta.url).pathname;
const readJson = (p: string) => JSON.parse(Deno.readTextFileSync(FIX + p));

Deno.test(
  "patchify: conv im2col order (c, ky, kx), row-major patches, ragged edge dropped",
  GPU_TEST,
  async () => {
    const g = await gpu();
    const [b, c, h, w, p] = [2, 3, 10, 13, 4]; // 2×3 patches; 2 rows / 1 column of pixels dropped
    const x = rand(b * c * h * w, 7);
    const t = Tensor.from(g, x, [b, c, h, w]);
    const out = patchify(t, p);
    assertEquals(out.shape, [b, 6, c * p * p]);
    const want = new Float32Array(out.size);
    let k = 0;
    for (let i = 0; i < b; i++) {
      for (let row = 0; row < 2; row++) {
        for (let col = 0; col < 3; col++) {
          for (let ch = 0; ch < c; ch++) {
            for (let ky = 0; ky < p; ky++) {
              for (let kx = 0; kx < p; kx++) {
                want[k++] = x[((i * c + ch) * h + row * p + ky) * w + col * p + kx];
              }
            }
          }
        }
      }
    }
    assertClose(await out.read(), want, 0, "patchify");
    t.dispose();
    out.dispose();
  },
);

Deno.test("configs: tiny-a vision / full siglip / qwen2, defaults, refusals, round trip", () => {
  const v = parseSiglipVisionConfig(readJson("vision/config.json"));
  assertEquals([v.hiddenSize, v.numHiddenLayers, v.numAttentionHeads, v.patchSize], [32, 2, 4, 8]);
  const full = parseSiglipVisionConfig(readJson("vision_full/config.json"));
  // The "siglip" config lists only some fields; the rest are SiglipVisionConfig defaults.
  assertEquals(full.hiddenSize, 32);
  assertEquals(full.layerNormEps, 1e-6);
  assertEquals(full.numChannels, 3);
  assertThrows(() => parseSiglipVisionConfig({ model_type: "siglip2" }), "NaFlex");
  assertThrows(() => parseSiglipVisionConfig({ model_type: "clip_vision_model" }), "not a SigLIP");
  const q = parseQwen2Config(readJson("text/config.json"));
  assertEquals([q.numAttentionHeads, q.numKeyValueHeads, q.headDim, q.tieWordEmbeddings], [
    4,
    2,
    16,
    true,
  ]);
  assertEquals(q.ropeTheta, 10000);
  // HF Qwen2Config defaults: untied head, kv heads = heads.
  const d = parseQwen2Config({ model_type: "qwen2", hidden_size: 64, num_attention_heads: 4 });
  assertEquals([d.tieWordEmbeddings, d.numKeyValueHeads, d.vocabSize], [false, 4, 151936]);
  assertThrows(
    () => parseQwen2Config({ model_type: "qwen2", rope_scaling: { type: "yarn" } }),
    "rope_scaling",
  );
  assertThrows(() => parseQwen2Config({ model_type: "qwen2", hidden_size: "x" }), "hidden_size");
  const s = parseSiqvlConfig({
    model_type: "siq_vl",
    vision_config: siglipVisionConfigJson(v),
    text_config: qwen2ConfigJson(q),
    projector_config: {
      vision_pixel_shuffle_factor: 2,
      vision_hidden_size: 32,
      text_hidden_size: 64,
    },
  });
  assertEquals(s.imageTokenId, 151655);
  assertEquals(parseSiqvlConfig(siqvlConfigJson(s)), s);
  assertThrows(() => parseSiqvlConfig({ model_type: "siq_vl", text_config: {} }), "vision_config");
});

Deno.test("projector factor: explicit, auto, cropping token count", () => {
  assertEquals(resolveFactor("auto", 14), 2);
  assertEquals(resolveFactor("auto", 27), 3);
  assertEquals(resolveFactor("auto", 7), 7);
  assertEquals(resolveFactor(2, 27), 2);
  assertEquals(imageTokensPerImage(27, 2), 169);
  assertEquals(imageTokensPerImage(14, 2), 49);
  assertThrows(() => resolveFactor("auto", 1), "no factor");
  assertThrows(() => resolveFactor(5, 4), "larger");
});

Deno.test("checkpoint keys: V3, V1, PEFT-wrapped, V2 refused", () => {
  const v3 = mapCheckpointKeys([
    "vision_model.vision_model.embeddings.patch_embedding.weight",
    "vision_model.vision_model.head.probe",
    "projector.mlp.weight",
    "text_model.model.embed_tokens.weight",
    "text_model.lm_head.weight",
  ]);
  assertEquals(v3.layout, "v3");
  assertEquals(v3.params.get("projector.proj.weight"), "projector.mlp.weight");
  assertEquals(v3.params.get("text_model.lm_head.weight"), "text_model.lm_head.weight");
  assertEquals(v3.ignored, ["vision_model.vision_model.head.probe"]);
  const peft = mapCheckpointKeys([
    "projector.mlp.weight",
    "text_model.base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight",
    "text_model.base_model.model.model.layers.0.self_attn.q_proj.base_layer.bias",
    "text_model.base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight",
    "text_model.base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight",
    "text_model.base_model.model.model.norm.weight",
    "text_model.base_model.model.lm_head.weight",
  ]);
  assertEquals(
    peft.params.get("text_model.model.layers.0.self_attn.q_proj.weight"),
    "text_model.base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight",
  );
  assertEquals(
    peft.params.get("text_model.model.norm.weight"),
    "text_model.base_model.model.model.norm.weight",
  );
  assertEquals(
    peft.params.get("text_model.lm_head.weight"),
    "text_model.base_model.model.lm_head.weight",
  );
  assertEquals(peft.lora.get("model.layers.0.self_attn.q_proj"), {
    A: "text_model.base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight",
    B: "text_model.base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight",
  });
  const v1 = mapCheckpointKeys([
    "vision_tower.embeddings.patch_embedding.weight",
    "vision_tower.head.probe",
    "llm.model.layers.0.mlp.up_proj.weight",
    "llm.lm_head.weight",
    "projector.proj.weight",
    "projector.norm.bias",
  ]);
  assertEquals(v1.layout, "v1");
  assertEquals(
    v1.params.get("vision_model.vision_model.embeddings.patch_embedding.weight"),
    "vision_tower.embeddings.patch_embedding.weight",
  );
  assertEquals(v1.params.get("projector.norm.bias"), "projector.norm.bias");
  assertEquals(
    v1.params.get("text_model.model.layers.0.mlp.up_proj.weight"),
    "llm.model.layers.0.mlp.up_proj.weight",
  );
  assertEquals(v1.ignored, ["vision_tower.head.probe"]);
  assertThrows(() => detectLayout(["projector.gate_proj.weight", "text_model.x"]), "V2");
  assertThrows(() => detectLayout(["model.embed_tokens.weight"]), "not a SiQ-VL");
  assertEquals(savedKey("projector.proj.weight"), "projector.mlp.weight");
});

Deno.test("peft config: parse, refuse, target matching", () => {
  const c = parsePeftConfig(readJson("lora/adapter_config.json"), "adapter_config.json");
  assertEquals([c.r, c.alpha, c.dropout, c.rslora], [4, 8, 0, false]);
  assertThrows(
    () => parsePeftConfig({ r: 4, target_modules: ["q_proj"], use_dora: true }, "x"),
    "use_dora",
  );
  assertThrows(
    () => parsePeftConfig({ r: 4, target_modules: ["q_proj"], modules_to_save: ["lm_head"] }, "x"),
    "modules_to_save",
  );
  const m = peftTargetMatcher(["q_proj", "down_proj"]);
  assertEquals(m("model.layers.3.self_attn.q_proj"), true);
  assertEquals(m("model.layers.3.self_attn.k_proj"), false);
  const re = peftTargetMatcher("model\\.layers\\.1\\..*_proj");
  assertEquals(re("model.layers.1.mlp.up_proj"), true);
  assertEquals(re("model.layers.11.mlp.up_proj"), false);
});

Deno.test("sampling: greedy, penalty, top-k / top-p support, seeded draws", () => {
  const logits = Float32Array.from([1, 3, -2, 2.5, 0]);
  assertEquals(argmax(logits), 1);
  const pen = logits.slice();
  applyRepetitionPenalty(pen, [1, 2, 1], 2);
  assertEquals([...pen], [1, 1.5, -4, 2.5, 0]);
  assertEquals(chooseToken(logits.slice(), [1], { repetitionPenalty: 2 }, Math.random), 3);
  // top-k 2 only ever draws tokens 1 and 3; top-p 0.5 keeps token 1 alone (p ≈ 0.55).
  const r = rng(3);
  const seen = new Set<number>();
  for (let i = 0; i < 200; i++) {
    seen.add(chooseToken(logits.slice(), [], { doSample: true, topK: 2 }, r));
  }
  assertEquals([...seen].sort(), [1, 3]);
  for (let i = 0; i < 50; i++) {
    assertEquals(chooseToken(logits.slice(), [], { doSample: true, topP: 0.5 }, r), 1);
  }
  // Frequencies follow softmax(logits / T).
  const counts = new Array(5).fill(0);
  const n = 20000;
  for (let i = 0; i < n; i++) {
    counts[chooseToken(logits.slice(), [], { doSample: true, temperature: 2 }, r)]++;
  }
  const z = [...logits].map((l) => Math.exp(l / 2));
  const tot = z.reduce((a, b) => a + b);
  z.forEach((p, i) => {
    const f = counts[i] / n;
    if (Math.abs(f - p / tot) > 0.015) throw new Error(`token ${i}: frequency ${f} vs ${p / tot}`);
  });
  // Same seed, same draws.
  const a = [1, 2, 3].map(() => 0), b2 = [...a];
  const r1 = rng(9), r2 = rng(9);
  for (let i = 0; i < 3; i++) {
    a[i] = chooseToken(logits.slice(), [], { doSample: true }, r1);
    b2[i] = chooseToken(logits.slice(), [], { doSample: true }, r2);
  }
  assertEquals(a, b2);
});

Deno.test("projector: cropped grid and LayerNorm against an f64 reference", GPU_TEST, async () => {
  const g = await gpu();
  const [b, s, dv, dt] = [2, 5, 6, 7];
  const x = rand(b * s * s * dv, 11);
  for (const [factor, ln] of [[2, true], [3, false], ["auto", true]] as const) {
    const cfg = {
      factor,
      visionHiddenSize: dv,
      textHiddenSize: dt,
      layerNorm: ln,
      layerNormEps: 1e-5,
    };
    const p = new Projector(cfg, s);
    p.initialize(g, 3);
    if (ln) {
      p.norm!.weight.set(Tensor.from(g, rand(dt, 12), [dt]));
      p.norm!.bias.set(Tensor.from(g, rand(dt, 13), [dt]));
    }
    const r = p.factor, grid = Math.floor(s / r), n = grid * grid, k = r * r * dv;
    assertEquals(r, factor === "auto" ? 5 : factor); // "auto" on a 5-grid: the only factor ≥ 2 is 5
    const xt = Tensor.from(g, x, [b, s * s, dv]);
    const y = noGrad(() => p.forward(xt));
    assertEquals(y.shape, [b, n, dt]);
    const w = await p.proj.weight.value.read();
    const lw = ln ? await p.norm!.weight.value.read() : null,
      lb = ln ? await p.norm!.bias.value.read() : null;
    const want = new Float64Array(b * n * dt);
    for (let i = 0; i < b; i++) {
      for (let t = 0; t < n; t++) {
        const gi = Math.floor(t / grid), gj = t % grid;
        const v = new Float64Array(k);
        for (let dy = 0; dy < r; dy++) {
          for (let dx = 0; dx < r; dx++) {
            for (let d = 0; d < dv; d++) {
              v[(dy * r + dx) * dv + d] = x[(i * s * s + (gi * r + dy) * s + gj * r + dx) * dv + d];
            }
          }
        }
        const o = new Float64Array(dt);
        for (let c = 0; c < dt; c++) for (let j = 0; j < k; j++) o[c] += w[c * k + j] * v[j];
        if (ln) {
          const mean = o.reduce((a, c) => a + c) / dt;
          const vr = o.reduce((a, c) => a + (c - mean) ** 2, 0) / dt;
          for (let c = 0; c < dt; c++) {
            o[c] = ((o[c] - mean) / Math.sqrt(vr + 1e-5)) * lw![c] + lb![c];
          }
        }
        want.set(o, (i * n + t) * dt);
      }
    }
    assertClose(
      await y.read(),
      want,
      1e-5,
      `projector factor ${factor}${ln ? " + LayerNorm" : ""}`,
    );
    for (const t of [xt, y]) t.dispose();
    p.dispose();
  }
});
