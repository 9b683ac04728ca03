// src/nn/lora.ts on a module tree that is not a Qwen2 model: injection by target names, PEFT
// names, the forward against a plain reference, switching off, merge (keep) / unmerge, removal.

import assert from "node:assert/strict";
import { Linear } from "../src/nn/linear.ts";
import {
  injectLora,
  isLoraParam,
  loraLinears,
  loraParameters,
  mergeLora,
  removeAdapter,
  setLoraEnabled,
  unmergeLora,
} from "../src/nn/lora.ts";
import { Module } from "../src/nn/module.ts";
import { noGrad, Tensor } from "../src/tensor/mod.ts";
import { assertClose, gpu, GPU_TEST, rand, relErr } from "./util.ts";

class Block extends Module {
  readonly q_proj = this.child("q_proj", new Linear(6, 5, true));
  readonly out = this.child("out", new Linear(5, 4, false));
  forward(x: Tensor): Tensor {
    return this.out.forward(this.q_proj.forward(x));
  }
}
class Tree extends Module {
  readonly blocks = [this.child("a", new Block()), this.child("b", new Block())];
}

// y = x·Wᵀ + b (+ s·x·Aᵀ·Bᵀ), plain f64.
function linearRef(x: Float64Array, n: number, w: Float32Array, b: Float32Array | null, o: number) {
  const k = w.length / o, y = new Float64Array(n * o);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < o; j++) {
      let s = b ? b[j] : 0;
      for (let t = 0; t < k; t++) s += x[i * k + t] * w[j * k + t];
      y[i * o + j] = s;
    }
  }
  return y;
}

Deno.test(
  "lora: inject by names into any tree, forward, off, merge/unmerge",
  GPU_TEST,
  async () => {
    const g = await gpu();
    const tree = new Tree();
    tree.initialize(g, 3);
    const hit = injectLora(tree, { r: 2, alpha: 4, dropout: 0 }, ["q_proj"]);
    assert.deepEqual(hit.map(([p]) => p), ["a.q_proj", "b.q_proj"]);
    assert.throws(() => injectLora(tree, { r: 2, alpha: 4, dropout: 0 }, ["nothing"]), /no module/);
    tree.initialize(g, 4);
    const names = tree.namedParameters().map(([n]) => n);
    assert.ok(names.includes("a.q_proj.lora_A.weight") && names.includes("b.q_proj.lora_B.weight"));
    assert.deepEqual(loraParameters(tree).map(([n]) => n).filter(isLoraParam).length, 4);
    assert.ok(!isLoraParam("a.q_proj.weight") && isLoraParam("x.lora_B.weight"));
    // A non-zero B so the adapter matters.
    const lin = tree.blocks[0].q_proj;
    lin.lora!.B.value.write(rand(5 * 2, 9, -0.5, 0.5));
    const xs = rand(3 * 6, 11, -1, 1);
    const x = Tensor.from(g, xs, [3, 6]);
    const w = await lin.weight.value.readF32(), b = await lin.bias!.value.readF32();
    const A = await lin.lora!.A.value.readF32(), B = await lin.lora!.B.value.readF32();
    const base = linearRef(Float64Array.from(xs), 3, w, b, 5);
    const low = linearRef(linearRef(Float64Array.from(xs), 3, A, null, 2), 3, B, null, 5);
    const want = base.map((v, i) => v + 2 * low[i]); // s = alpha / r = 2
    const run = async () => {
      const y = noGrad(() => lin.forward(x));
      const v = await y.readF32();
      y.dispose();
      return v;
    };
    assertClose(await run(), want, 1e-5, "adapter on");
    setLoraEnabled(tree, false);
    assertClose(await run(), base, 1e-5, "adapter off = base");
    setLoraEnabled(tree, true);
    mergeLora(tree, { keep: true });
    assertClose(await run(), want, 1e-5, "merged, kept");
    assert.ok(relErr(await lin.weight.value.readF32(), w) > 1e-3, "merging changed W");
    assert.ok(lin.lora!.merged);
    unmergeLora(tree);
    assertClose(await lin.weight.value.readF32(), w, 1e-6, "unmerge restores W");
    assertClose(await run(), want, 1e-5, "unmerged: adapter on again");
    mergeLora(tree);
    assert.equal(loraLinears(tree).length, 0, "plain merge removes the adapters");
    assertClose(await run(), want, 1e-5, "merged into W");
    assert.ok(!tree.namedParameters().some(([n]) => isLoraParam(n)));
    injectLora(tree, { r: 1, alpha: 1, dropout: 0 }, (p) => p === "b.out");
    assert.deepEqual(loraLinears(tree).map(([p]) => p), ["b.out"]);
    removeAdapter(tree.blocks[1].out);
    assert.equal(loraLinears(tree).length, 0);
    x.dispose();
  },
);
