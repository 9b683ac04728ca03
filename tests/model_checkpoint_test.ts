// SiQ-VL checkpoints: our format (save → load, PEFT adapter or merged), the original project's
// V3 (PEFT-wrapped, PyTorch .bin) and V1 layouts, dtype policy, and the error messages.

import { deepStrictEqual as assertEquals, rejects, throws } from "node:assert/strict";
import { join } from "node:path";
import { gpu, GPU_TEST } from "./util.ts";
import type { Gpu } from "../src/gpu/device.ts";
import { openTensors } from "../src/io/reader.ts";
import { writeSafetensors } from "../src/io/safetensors.ts";
import { writeTorchBin } from "../src/io/torch_bin.ts";
import type { TensorData } from "../src/io/tensor_input.ts";
import { f32ToBf16Bits, noGrad, Tensor, tidy } from "../src/tensor/mod.ts";
import { loadSiqvl, saveSiqvl } from "../src/models/checkpoint.ts";
import { siqvlConfigJson } from "../src/models/configs.ts";
import { loadPeftAdapter } from "../src/models/peft.ts";
import type { SiqvlModel } from "../src/models/siqvl.ts";
import { type FixtureInputs, loadFixtureModel, readFixtureInputs } from "../src/parity/fixture.ts";

const FIX = new URL("./fixtures/tiny-a/", import.meta.url).pathname;
const fixtureConfig = () => JSON.parse(Deno.readTextFileSync(FIX + "siqvl_config.json"));

async function expectedScalar(name: string): Promise<number> {
  const r = await openTensors(FIX + "expected.safetensors");
  const v = (await r.readF32(name))[0];
  r.close();
  return v;
}

async function lossOf(g: Gpu, model: SiqvlModel, inp: FixtureInputs): Promise<number> {
  const pixels = Tensor.from(g, inp.pixelValues, inp.pixelShape);
  const loss = noGrad(() =>
    tidy(() =>
      model.forward({
        inputIds: inp.inputIds,
        batch: inp.batch,
        seqLen: inp.seqLen,
        attentionMask: inp.attentionMask,
        labels: inp.labels,
        pixelValues: pixels,
      }).loss!
    )
  );
  const v = await loss.item();
  loss.dispose();
  pixels.dispose();
  return v;
}

/** Every tensor of a fixture safetensors file as F32 writer entries, names mapped by `rename`. */
async function tensorsOf(
  path: string,
  rename: (k: string) => string,
): Promise<Record<string, TensorData>> {
  const r = await openTensors(path);
  const out: Record<string, TensorData> = {};
  for (const k of r.keys()) {
    out[rename(k)] = { dtype: "F32", shape: r.info(k).shape, data: await r.readF32(k) };
  }
  r.close();
  return out;
}

function near(got: number, want: number, tol: number, what: string): void {
  const e = Math.abs(got - want) / Math.abs(want);
  if (!(e <= tol)) throw new Error(`${what}: ${got} vs ${want} (relative ${e.toExponential(2)})`);
}

Deno.test(
  "checkpoint: our format round trip, with a PEFT adapter and merged",
  GPU_TEST,
  async () => {
    const g = await gpu();
    const inp = await readFixtureInputs(FIX);
    const tmp = await Deno.makeTempDir({ prefix: "siqvl-ckpt-" });
    try {
      const model = await loadFixtureModel(g, FIX, fixtureConfig());
      await loadPeftAdapter(g, model.text, join(FIX, "lora"));
      const want = await lossOf(g, model, inp);
      near(want, await expectedScalar("lora.loss"), 1e-5, "LoRA loss before saving");
      await saveSiqvl(model, join(tmp, "a"));
      const files = [...Deno.readDirSync(join(tmp, "a"))].map((e) => e.name).sort();
      assertEquals(files, [
        "adapter_config.json",
        "adapter_model.safetensors",
        "config.json",
        "model.safetensors",
      ]);
      const r = await openTensors(join(tmp, "a/model.safetensors"));
      const keys = r.keys();
      r.close();
      assertEquals(keys.includes("projector.mlp.weight"), true);
      assertEquals(keys.some((k) => k.includes("lora")), false);
      assertEquals(
        keys.every((k) =>
          /^(vision_model\.vision_model\.|text_model\.model\.|projector\.)/.test(k)
        ),
        true,
      );
      const back = await loadSiqvl(g, join(tmp, "a"));
      assertEquals(back.text.loraLinears().length, 14);
      assertEquals(await lossOf(g, back, inp), want);
      back.dispose();
      await saveSiqvl(model, join(tmp, "m"), { lora: "merge" });
      assertEquals(await Deno.stat(join(tmp, "m/adapter_config.json")).catch(() => null), null);
      const merged = await loadSiqvl(g, join(tmp, "m"));
      assertEquals(merged.text.loraLinears().length, 0);
      near(await lossOf(g, merged, inp), want, 1e-5, "merged LoRA loss");
      merged.dispose();
      // Merging in memory gives the same.
      model.text.mergeLora();
      near(await lossOf(g, model, inp), want, 1e-5, "mergeLora loss");
      model.dispose();
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  },
);

Deno.test(
  "checkpoint: original V3 PEFT-wrapped .bin and V1 safetensors load",
  GPU_TEST,
  async () => {
    const g = await gpu();
    const inp = await readFixtureInputs(FIX);
    const tmp = await Deno.makeTempDir({ prefix: "siqvl-ckpt-" });
    try {
      const ref = await loadFixtureModel(g, FIX, fixtureConfig());
      const configJson = siqvlConfigJson(ref.config);
      ref.dispose();
      const lora = await tensorsOf(join(FIX, "lora/adapter_model.safetensors"), (k) => k);
      const targets = new Set(
        Object.keys(lora).map((k) =>
          k.replace(/^base_model\.model\./, "").replace(/\.lora_[AB]\.weight$/, "")
        ),
      );
      // V3 with PEFT wrapping: base_layer for targets, lora_X.default, the tied head aliased.
      const text = await tensorsOf(join(FIX, "text/model.safetensors"), (k) => {
        const mod = k.replace(/\.(weight|bias)$/, "");
        const leaf = k.slice(mod.length);
        return `text_model.base_model.model.${targets.has(mod) ? `${mod}.base_layer${leaf}` : k}`;
      });
      text["text_model.base_model.model.lm_head.weight"] =
        text["text_model.base_model.model.model.embed_tokens.weight"];
      const v3: Record<string, TensorData> = {
        ...(await tensorsOf(join(FIX, "vision/model.safetensors"), (k) => `vision_model.${k}`)),
        ...(await tensorsOf(join(FIX, "projector.safetensors"), () => "projector.mlp.weight")),
        ...text,
        ...Object.fromEntries(
          Object.entries(lora).map(([k, v]) => [
            `text_model.${k.replace(/\.weight$/, ".default.weight")}`,
            v,
          ]),
        ),
      };
      await Deno.mkdir(join(tmp, "v3"));
      await Deno.writeTextFile(join(tmp, "v3/config.json"), JSON.stringify(configJson));
      await writeTorchBin(join(tmp, "v3/pytorch_model.bin"), v3);
      const m3 = await loadSiqvl(g, join(tmp, "v3"), { loraAlpha: 8 });
      assertEquals(m3.text.loraLinears().length, 14);
      near(await lossOf(g, m3, inp), await expectedScalar("lora.loss"), 1e-5, "V3 PEFT loss");
      m3.dispose();
      // V1: vision_tower. / llm. / projector.proj, config given by the caller.
      const v1: Record<string, TensorData> = {
        ...(await tensorsOf(
          join(FIX, "vision/model.safetensors"),
          (k) => k.replace(/^vision_model\./, "vision_tower."),
        )),
        ...(await tensorsOf(join(FIX, "projector.safetensors"), (k) => k)),
        ...(await tensorsOf(join(FIX, "text/model.safetensors"), (k) => `llm.${k}`)),
      };
      await writeSafetensors(join(tmp, "v1.safetensors"), v1);
      await rejects(loadSiqvl(g, join(tmp, "v1.safetensors")), /no config\.json/);
      const m1 = await loadSiqvl(g, join(tmp, "v1.safetensors"), { config: ref.config });
      near(await lossOf(g, m1, inp), await expectedScalar("lm.loss"), 1e-5, "V1 loss");
      m1.dispose();
      // Errors name the file, the key and the shapes.
      for (
        const [shape, msg] of [
          [[64, 100], /projector weight "projector\.proj\.weight" \[64, 100\] does not fit/],
          [[64, 32], /factor 2 disagrees with the projector weight/],
        ] as const
      ) {
        const bad = {
          ...v1,
          "projector.proj.weight": {
            dtype: "F32" as const,
            shape: [...shape],
            data: new Float32Array(shape[0] * shape[1]),
          },
        };
        await writeSafetensors(join(tmp, "bad.safetensors"), bad);
        await rejects(loadSiqvl(g, join(tmp, "bad.safetensors"), { config: ref.config }), msg);
      }
      const extra = {
        ...v1,
        "llm.model.layers.7.mlp.up_proj.weight": v1["llm.model.layers.0.mlp.up_proj.weight"],
      };
      await writeSafetensors(join(tmp, "extra.safetensors"), extra);
      await rejects(
        loadSiqvl(g, join(tmp, "extra.safetensors"), { config: ref.config }),
        /no place in a model/,
      );
      const missing = { ...v1 };
      delete missing["llm.model.norm.weight"];
      await writeSafetensors(join(tmp, "missing.safetensors"), missing);
      await rejects(
        loadSiqvl(g, join(tmp, "missing.safetensors"), { config: ref.config }),
        /text_model\.model\.norm\.weight/,
      );
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  },
);

Deno.test(
  "checkpoint: frozen bf16 matrices stay bf16, norms f32, trainable → f32; image count mismatch",
  GPU_TEST,
  async () => {
    const g = await gpu();
    const tmp = await Deno.makeTempDir({ prefix: "siqvl-ckpt-" });
    try {
      for (const d of ["vision", "text"]) {
        await Deno.mkdir(join(tmp, d));
        await Deno.copyFile(join(FIX, d, "config.json"), join(tmp, d, "config.json"));
        const t = await tensorsOf(join(FIX, d, "model.safetensors"), (k) => k);
        for (const e of Object.values(t)) {
          const f = e.data as Float32Array;
          e.dtype = "BF16";
          e.data = Uint16Array.from(f, (x) => f32ToBf16Bits(x));
        }
        await writeSafetensors(join(tmp, d, "model.safetensors"), t);
      }
      await Deno.copyFile(join(FIX, "projector.safetensors"), join(tmp, "projector.safetensors"));
      const model = await loadFixtureModel(g, tmp, fixtureConfig());
      const dt = (n: string) => model.parameter(n).value.dtype;
      assertEquals(dt("text_model.model.embed_tokens.weight"), "bf16");
      assertEquals(dt("text_model.model.layers.0.self_attn.q_proj.weight"), "bf16");
      assertEquals(dt("text_model.model.layers.0.self_attn.q_proj.bias"), "f32");
      assertEquals(dt("text_model.model.norm.weight"), "f32");
      assertEquals(dt("vision_model.vision_model.embeddings.patch_embedding.weight"), "bf16");
      assertEquals(dt("vision_model.vision_model.embeddings.position_embedding.weight"), "f32");
      const q = model.parameter("text_model.model.layers.0.self_attn.q_proj.weight");
      const before = await q.value.read();
      q.setTrainable(true);
      assertEquals([q.value.dtype, q.trainable], ["f32", true]);
      assertEquals([...(await q.value.read())], [...before]);
      // <|image_pad|> count ≠ image tokens: a clear error naming both counts.
      const ids = [1, 2, 299, 299, 299, 5];
      const pixels = Tensor.from(g, new Float32Array(3 * 32 * 32), [1, 3, 32, 32]);
      throws(
        () => noGrad(() => model.embedInputs(ids, 1, ids.length, pixels)),
        /3 <\|image_pad\|>.*produce 4 image tokens/,
      );
      pixels.dispose();
      model.dispose();
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  },
);
