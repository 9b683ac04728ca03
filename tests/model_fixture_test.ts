// Whole-model parity with the PyTorch reference fixture tests/fixtures/tiny-a (HF SigLIP + Qwen2
// modeling code, f32): vision, projector, fusion, logits, loss, every stage-1 / stage-2 / LoRA
// gradient and the greedy KV-cache tokens. Prints the measured errors.

import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { join } from "node:path";
import { gpu, GPU_TEST } from "./util.ts";
import { openTensors } from "../src/io/reader.ts";
import { writeSafetensors } from "../src/io/safetensors.ts";
import type { TensorData } from "../src/io/tensor_input.ts";
import { f32ToBf16Bits } from "../src/tensor/mod.ts";
import {
  compareFixture,
  type FixtureError,
  readFixtureInputs,
  runFixture,
} from "../src/parity/fixture.ts";

const FIX = new URL("./fixtures/tiny-a/", import.meta.url).pathname;

/** Tolerance per reference tensor (f32 path): activations/logits/loss 1e-5, gradients 1e-4. */
function tolerance(name: string): number {
  return name.startsWith("grad.") ? 1e-4 : 1e-5;
}

function report(title: string, rows: FixtureError[]): void {
  console.log(`\n${title}`);
  for (const r of rows) {
    const note = r.exact === undefined ? "" : r.exact ? " identical" : " DIFFERENT";
    console.log(
      `  ${r.name.padEnd(70)} rel ${r.relErr.toExponential(2)}  max ${
        r.maxAbs.toExponential(2)
      }${note}`,
    );
  }
}

function check(rows: FixtureError[]): void {
  const bad = rows.filter((
    r,
  ) => (r.exact !== undefined ? !r.exact : !(r.relErr <= tolerance(r.name))));
  if (bad.length) {
    throw new Error(
      `${bad.length} tensor(s) out of tolerance: ` +
        bad.map((r) => `${r.name} (${r.relErr.toExponential(2)})`).join(", "),
    );
  }
}

Deno.test("fixture tiny-a: every reference tensor within tolerance", GPU_TEST, async () => {
  const g = await gpu();
  const t0 = performance.now();
  const out = await runFixture(g, FIX);
  const inputs = await readFixtureInputs(FIX);
  const rows = await compareFixture(out, FIX + "expected.safetensors", inputs);
  report(`tiny-a (${((performance.now() - t0) / 1000).toFixed(1)} s)`, rows);
  // Everything except the training sequences must have been computed.
  const r = await openTensors(FIX + "expected.safetensors");
  const want = r.keys().filter((k) => !k.startsWith("train."));
  r.close();
  const missing = want.filter((k) => !out.has(k));
  assertEquals(missing, []);
  assertEquals(rows.length, want.length);
  check(rows);
  const lossRow = rows.find((x) => x.name === "lm.loss")!;
  const gradRows = rows.filter((x) => x.name.startsWith("grad."));
  console.log(
    `  max logits/loss error ${
      Math.max(...rows.filter((x) => /logits|loss/.test(x.name)).map((x) => x.relErr))
        .toExponential(2)
    }` +
      `, loss ${lossRow.relErr.toExponential(2)}, max gradient error ` +
      `${
        Math.max(...gradRows.map((x) => x.relErr)).toExponential(2)
      } over ${gradRows.length} gradients`,
  );
});

// ---- variants built from tiny-a: int32 inputs, bf16 weights, an untied head, a full SigLIP ----

async function copyDir(src: string, dst: string): Promise<void> {
  await Deno.mkdir(dst, { recursive: true });
  for await (const e of Deno.readDir(src)) {
    if (e.isDirectory) await copyDir(join(src, e.name), join(dst, e.name));
    else await Deno.copyFile(join(src, e.name), join(dst, e.name));
  }
}

/** Rewrite a safetensors file, transforming tensors (return null to drop, or extra tensors). */
async function rewrite(
  path: string,
  fn: (
    name: string,
    t: { dtype: string; shape: number[]; f32: Float32Array },
  ) => Record<string, TensorData>,
): Promise<void> {
  const r = await openTensors(path);
  const out: Record<string, TensorData> = {};
  for (const k of r.keys()) {
    Object.assign(
      out,
      fn(k, { dtype: r.info(k).dtype, shape: r.info(k).shape, f32: await r.readF32(k) }),
    );
  }
  r.close();
  await writeSafetensors(path, out, { format: "pt" });
}

const bf16 = (shape: number[], v: Float32Array): TensorData => ({
  dtype: "BF16",
  shape,
  data: Uint16Array.from(v, (x) => f32ToBf16Bits(x)),
});
const roundedF32 = (shape: number[], v: Float32Array): TensorData => {
  const u = Uint16Array.from(v, (x) => f32ToBf16Bits(x));
  return {
    dtype: "F32",
    shape,
    data: new Float32Array(Uint32Array.from(u, (b) => b << 16).buffer),
  };
};

Deno.test(
  "fixture variants: bf16 weights stay packed and equal the f32 path on rounded weights; int32 ids",
  GPU_TEST,
  async () => {
    const g = await gpu();
    const tmp = await Deno.makeTempDir({ prefix: "siqvl-fix-" });
    try {
      const a = join(tmp, "bf16"), b = join(tmp, "rounded");
      for (const [dir, conv] of [[a, bf16], [b, roundedF32]] as const) {
        await copyDir(FIX, dir);
        for (const f of ["vision/model.safetensors", "text/model.safetensors"]) {
          await rewrite(join(dir, f), (k, t) => ({
            [k]: t.shape.length >= 2
              ? conv(t.shape, t.f32)
              : { dtype: "F32", shape: t.shape, data: t.f32 },
          }));
        }
      }
      // int32 ids in the bf16 variant.
      await rewrite(join(a, "inputs.safetensors"), (k, t) => ({
        [k]: t.dtype === "I64"
          ? { dtype: "I32", shape: t.shape, data: Int32Array.from(t.f32) }
          : { dtype: "F32", shape: t.shape, data: t.f32 },
      }));
      const sections = ["forward", "generate"];
      const outA = await runFixture(g, a, sections);
      const outB = await runFixture(g, b, sections);
      let worst = 0;
      for (const [name, t] of outB) {
        const u = outA.get(name)!;
        let num = 0, den = 0;
        for (let i = 0; i < t.data.length; i++) {
          num += (u.data[i] - t.data[i]) ** 2;
          den += t.data[i] ** 2;
        }
        const e = Math.sqrt(num / Math.max(den, 1e-30));
        worst = Math.max(worst, e);
        if (t.dtype === "I64") {
          assertEquals([...u.data], [...t.data]);
        } else if (!(e <= 1e-6)) {
          throw new Error(`${name}: bf16 storage vs rounded f32 differ by ${e}`);
        }
      }
      console.log(
        `bf16-stored vs f32-rounded weights: worst relative difference ${worst.toExponential(2)}`,
      );
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  },
);

Deno.test(
  "fixture variants: an untied head and a full SigLIP checkpoint reproduce tiny-a",
  GPU_TEST,
  async () => {
    const g = await gpu();
    const tmp = await Deno.makeTempDir({ prefix: "siqvl-fix-" });
    try {
      await copyDir(FIX, tmp);
      const cfgPath = join(tmp, "text/config.json");
      const cfg = JSON.parse(await Deno.readTextFile(cfgPath));
      cfg.tie_word_embeddings = false;
      await Deno.writeTextFile(cfgPath, JSON.stringify(cfg));
      await rewrite(join(tmp, "text/model.safetensors"), (k, t) => {
        const e: TensorData = { dtype: "F32", shape: t.shape, data: t.f32 };
        return k === "model.embed_tokens.weight"
          ? { [k]: e, "lm_head.weight": { ...e, data: t.f32.slice() } }
          : { [k]: e };
      });
      const sc = JSON.parse(await Deno.readTextFile(join(tmp, "siqvl_config.json")));
      sc.vision_dir = "vision_full";
      await Deno.writeTextFile(join(tmp, "siqvl_config.json"), JSON.stringify(sc));
      const out = await runFixture(g, tmp, ["forward", "grad"]);
      const rows = await compareFixture(
        out,
        FIX + "expected.safetensors",
        await readFixtureInputs(FIX),
      );
      report("untied head + vision_full", rows);
      check(rows.filter((r) => r.name !== "grad.model.embed_tokens.weight"));
      // The tied gradient = input-embedding part + head part.
      const ge = out.get("grad.model.embed_tokens.weight")!.data,
        gh = out.get("grad.lm_head.weight")!.data;
      const sum = new Map([["grad.model.embed_tokens.weight", {
        dtype: "F32" as const,
        shape: out.get("grad.lm_head.weight")!.shape,
        data: Float32Array.from(ge, (v, i) => v + gh[i]),
      }]]);
      check(await compareFixture(sum, FIX + "expected.safetensors", await readFixtureInputs(FIX)));
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  },
);
