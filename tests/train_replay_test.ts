// The fixture's 10-step training sequences (train.stage1|full|lora.*) replayed through the
// trainer's own step code (StepRunner + AdamW + GPU clipping) must match PyTorch:
// losses, grad norms and final loss within 1e-5 relative; final weights within 1e-5 of each
// tensor's scale (max |diff| / max |ref|) — tight enough to see the weight-decay rule.

import assert from "node:assert/strict";
import { join } from "node:path";
import { openTensors } from "../src/io/reader.ts";
import { openFixture } from "../src/parity/fixture.ts";
import { replayFixtureSection, type ReplaySetting } from "../src/parity/replay.ts";
import { gpu, GPU_TEST } from "./util.ts";

const DIR = new URL("./fixtures/tiny-a/", import.meta.url).pathname;

function relDiff(got: ArrayLike<number>, want: ArrayLike<number>): number[] {
  return Array.from(want, (w, i) => Math.abs(got[i] - w) / Math.max(Math.abs(w), 1e-30));
}

for (const setting of ["stage1", "lora", "full"] as ReplaySetting[]) {
  Deno.test(`fixture training replay: train.${setting}`, GPU_TEST, async () => {
    const g = await gpu();
    const ctx = await openFixture(g, DIR);
    const exp = await openTensors(join(DIR, "expected.safetensors"));
    try {
      const r = await replayFixtureSection(ctx, setting);
      const pre = `train.${setting}`;
      const losses = await exp.readF32(`${pre}.losses`);
      const norms = await exp.readF32(`${pre}.grad_norms`);
      const final = (await exp.readF32(`${pre}.final_loss`))[0];
      const lossErr = Math.max(...relDiff(r.losses, losses));
      const normErr = Math.max(...relDiff(r.gradNorms, norms));
      const finalErr = Math.abs(r.finalLoss - final) / final;
      console.log(
        `${setting}: losses ${r.losses[0].toFixed(6)} → ${r.losses[9].toFixed(6)} ` +
          `(max rel err ${lossErr.toExponential(2)}), grad norms ${normErr.toExponential(2)}, ` +
          `final ${finalErr.toExponential(2)}`,
      );
      assert.equal(r.losses.length, 10);
      assert.ok(lossErr <= 1e-5, `losses: ${r.losses} vs ${losses}`);
      assert.ok(normErr <= 1e-5, `grad norms: ${r.gradNorms} vs ${norms}`);
      assert.ok(finalErr <= 1e-5, `final loss ${r.finalLoss} vs ${final}`);
      // The optimiser saw what the fixture says it should.
      const cfg = (ctx.config.train as { settings: Record<string, Record<string, unknown>> })
        .settings[setting];
      assert.equal(r.numTrainableTensors, cfg.num_trainable_tensors);
      assert.equal(r.numTrainableParams, cfg.num_trainable_params);
      const noDecay = r.noDecay.map((n) => n.replace(/^text_model\./, "")).sort();
      assert.deepEqual(noDecay, [...(cfg.no_weight_decay_tensors as string[])].sort());
      if (setting !== "full") {
        let worst = 0;
        for (const [name] of r.finalWeights) {
          const key = `${pre}.final.${
            name.startsWith("text_model.") ? "base_model.model." + name.slice(11) : name
          }`;
          const want = await exp.readF32(key);
          const got = ctx.out.get(key)!.data;
          let maxRef = 0, maxDiff = 0;
          for (let i = 0; i < want.length; i++) {
            maxRef = Math.max(maxRef, Math.abs(want[i]));
            maxDiff = Math.max(maxDiff, Math.abs(got[i] - want[i]));
          }
          worst = Math.max(worst, maxDiff / maxRef);
        }
        console.log(`${setting}: final weights max |diff| / scale ${worst.toExponential(2)}`);
        assert.ok(worst <= 1e-5, `final weights off by ${worst} of their scale`);
      }
    } finally {
      exp.close();
      ctx.model.dispose();
    }
  });
}
