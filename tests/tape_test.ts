// The autograd tape's memory behaviour, measured with the buffer pool's live / peak bytes:
// activations die at their last use, backward's peak stays near forward's, checkpointing keeps
// only layer-boundary activations, noGrad records nothing, and gradients accumulate.
//
// The model: a residual MLP of L layers on x [N, H] (no matmul: every op is pointwise or
// row-wise, which makes the activation accounting exact):
//   layer(x) = x + geluTanh(siluMul(layerNorm(x, w, b), x ⊙ s)),  loss = Σ output.

import { assertClose, gpu, GPU_TEST, rand, TOL } from "./util.ts";
import { sizeClass } from "../src/gpu/pool.ts";
import type { Gpu } from "../src/gpu/device.ts";
import {
  add,
  checkpoint,
  checkpointStats,
  geluTanh,
  layerNorm,
  mul,
  noGrad,
  setCheckpointBudget,
  siluMul,
  sum,
  Tensor,
  tidy,
} from "../src/tensor/mod.ts";

const N = 64, H = 96;
/** Pool bytes of one [N, H] f32 activation, of layerNorm's [N, 2] statistics, of the loss. */
const ACT = sizeClass(N * H * 4), STATS = sizeClass(N * 2 * 4), LOSS = sizeClass(4);
/**
 * Bytes a plain forward of `depth` layers leaves on the tape: per layer LN stats, LN out, x ⊙ s
 * and silu out, plus the inputs of layers 1.. (layer 0's input is the caller's x).
 */
const plainHold = (depth: number) => depth * (3 * ACT + STATS) + (depth - 1) * ACT + LOSS;

interface Layer {
  w: Tensor;
  b: Tensor;
  s: Tensor;
}

function makeLayers(g: Gpu, depth: number): Layer[] {
  return Array.from({ length: depth }, (_, l) => {
    const mk = (seed: number, lo: number, hi: number) => {
      const t = Tensor.from(g, rand(H, 1000 * l + seed, lo, hi), [H]);
      t.requiresGrad = true;
      return t;
    };
    return { w: mk(1, 0.5, 1.5), b: mk(2, 0.05, 0.5), s: mk(3, 0.5, 1.5) };
  });
}

function layer(x: Tensor, p: Layer): Tensor {
  return add(x, geluTanh(siluMul(layerNorm(x, p.w, p.b, 1e-5), mul(x, p.s))));
}

function forward(x: Tensor, layers: Layer[], ckpt: boolean): Tensor {
  return tidy(() => {
    let h = x;
    for (const p of layers) h = ckpt ? checkpoint((y) => layer(y, p), [h]) : layer(h, p);
    return sum(h);
  });
}

const params = (layers: Layer[]) => layers.flatMap((p) => [p.w, p.b, p.s]);
const live = (g: Gpu) => g.memory().live;

function disposeAll(layers: Layer[], ...more: Tensor[]): void {
  for (const t of [...params(layers), ...more]) t.dispose();
}

async function grads(layers: Layer[]): Promise<Float32Array[]> {
  return await Promise.all(params(layers).map((p) => p.grad!.read() as Promise<Float32Array>));
}

Deno.test(
  "tape: activations freed after backward; backward peak near forward peak",
  GPU_TEST,
  async () => {
    const g = await gpu();
    const depth = 4;
    const layers = makeLayers(g, depth);
    const x = Tensor.from(g, rand(N * H, 7), [N, H]);
    x.requiresGrad = true;
    const base = live(g);
    g.pool.resetPeak();
    const loss = forward(x, layers, false);
    const afterForward = live(g);
    const peakForward = g.memory().peak - base;
    if (afterForward - base !== plainHold(depth)) {
      throw new Error(`${afterForward - base} bytes held after forward, want ${plainHold(depth)}`);
    }
    const perLayer = (afterForward - base) / depth;
    g.pool.resetPeak();
    loss.backward();
    const peakBackward = g.memory().peak - base;
    loss.dispose();
    // (a) only the gradients remain (every leaf got one: 3 per layer and x).
    const gradBytes = [...params(layers), x].reduce((s, p) => s + p.grad!.storage.buffer.size, 0);
    if (live(g) !== base + gradBytes) {
      throw new Error(`live ${live(g)} after backward, want params + grads = ${base + gradBytes}`);
    }
    // (b) backward's peak exceeds forward's by at most two layers' activations.
    if (peakBackward > peakForward + 2 * perLayer) {
      throw new Error(`backward peak ${peakBackward} > forward peak ${peakForward} + 2 layers`);
    }
    disposeAll(layers, x);
    if (live(g) !== base - 3 * depth * sizeClass(H * 4) - ACT) throw new Error("leak at the end");
  },
);

Deno.test(
  "tape: checkpoint keeps only boundary activations, same gradients",
  GPU_TEST,
  async () => {
    const g = await gpu();
    const xv = rand(N * H, 8);
    const results: { depth: number; saved: number; plainSaved: number; peak: number }[] = [];
    for (const depth of [2, 4, 8]) {
      const x = Tensor.from(g, xv, [N, H]);
      x.requiresGrad = true;
      // Reference gradients without checkpointing.
      const ref = makeLayers(g, depth);
      const base0 = live(g);
      const l0 = forward(x, ref, false);
      const plainSaved = live(g) - base0;
      l0.backward();
      l0.dispose();
      const refGrads = await grads(ref);
      const refX = await x.grad!.read();
      x.grad!.dispose();
      x.grad = null;
      disposeAll(ref);

      const layers = makeLayers(g, depth);
      const base = live(g);
      g.pool.resetPeak();
      const loss = forward(x, layers, true);
      const saved = live(g) - base;
      loss.backward();
      const peak = g.memory().peak - base;
      loss.dispose();
      const got = await grads(layers);
      got.forEach((v, k) =>
        assertClose(v, refGrads[k], 0, `depth ${depth}: checkpointed grad ${k}`)
      );
      assertClose(await x.grad!.read(), refX, 0, `depth ${depth}: checkpointed grad of x`);
      results.push({ depth, saved, plainSaved, peak });
      disposeAll(layers, x);
    }
    // (c) after forward: the loss plus one boundary activation per layer after the first.
    for (const r of results) {
      if (r.saved !== (r.depth - 1) * ACT + LOSS) {
        throw new Error(
          `depth ${r.depth}: ${r.saved} bytes held after a checkpointed forward, ` +
            `want ${(r.depth - 1) * ACT + LOSS}`,
        );
      }
      if (r.plainSaved !== plainHold(r.depth)) throw new Error(`depth ${r.depth}: plain forward`);
    }
    const [d2, d4, d8] = results;
    if (d8.saved - d4.saved !== 4 * ACT || d4.saved - d2.saved !== 2 * ACT) {
      throw new Error(`checkpointed growth ${d2.saved} / ${d4.saved} / ${d8.saved}`);
    }
    // The recompute of one layer at a time keeps backward's peak below the plain forward's hold.
    if (!(d8.peak < d8.plainSaved)) throw new Error(`peak ${d8.peak} vs ${d8.plainSaved}`);
  },
);

Deno.test(
  "tape: a checkpoint budget keeps the tape of the calls that fit, same gradients",
  GPU_TEST,
  async () => {
    const g = await gpu();
    const depth = 6;
    const xv = rand(N * H, 9);
    // One layer's inner activations (what a kept call holds beyond its output).
    const perLayer = 3 * ACT + STATS;
    const run = async (budget: number) => {
      const x = Tensor.from(g, xv, [N, H]);
      x.requiresGrad = true;
      const layers = makeLayers(g, depth);
      const prev = setCheckpointBudget(budget);
      checkpointStats(true);
      const base = live(g);
      let loss: Tensor;
      try {
        loss = forward(x, layers, true);
      } finally {
        setCheckpointBudget(prev);
      }
      const saved = live(g) - base;
      const stats = checkpointStats(true);
      loss.backward();
      loss.dispose();
      const out = { saved, stats, grads: await grads(layers), gx: await x.grad!.read() };
      if (checkpointStats().keptBytes !== 0) throw new Error("kept calls outlive backward");
      disposeAll(layers, x);
      return out;
    };
    const none = await run(0);
    // Room for 3 layers (each kept call holds its inner activations plus its output).
    const some = await run(3 * (perLayer + ACT));
    const all = await run(Infinity);
    if (none.stats.kept !== 0 || none.stats.recomputed !== depth) {
      throw new Error(`budget 0: ${JSON.stringify(none.stats)}`);
    }
    if (some.stats.kept !== 3 || some.stats.recomputed !== depth - 3) {
      throw new Error(`budget of 3 layers: ${JSON.stringify(some.stats)}`);
    }
    if (all.stats.kept !== depth) throw new Error(`budget ∞: ${JSON.stringify(all.stats)}`);
    if (!(none.saved < some.saved && some.saved < all.saved)) {
      throw new Error(`held ${none.saved} / ${some.saved} / ${all.saved}`);
    }
    if (some.saved - none.saved !== 3 * perLayer) {
      throw new Error(`3 kept layers hold ${some.saved - none.saved}, want ${3 * perLayer}`);
    }
    for (const r of [some, all]) {
      r.grads.forEach((v, k) => assertClose(v, none.grads[k], 0, `grad ${k}`));
      assertClose(r.gx, none.gx, 0, "grad of x");
    }
  },
);

Deno.test(
  "tape: noGrad records nothing; gradients accumulate over backward calls",
  GPU_TEST,
  async () => {
    const g = await gpu();
    const layers = makeLayers(g, 2);
    const x = Tensor.from(g, rand(N * H, 9), [N, H]);
    x.requiresGrad = true;
    const base = live(g);
    const out = noGrad(() => forward(x, layers, false));
    if (out.node || out.requiresGrad) throw new Error("noGrad recorded a node");
    if (live(g) !== base + sizeClass(4)) throw new Error(`noGrad kept ${live(g) - base} bytes`);
    const valueNoGrad = await out.item();
    out.dispose();
    if (live(g) !== base) throw new Error("noGrad leaked");

    const l1 = forward(x, layers, false);
    if (!l1.node) throw new Error("grad mode did not record");
    assertClose([await l1.item()], [valueNoGrad], 0, "same loss with and without the tape");
    l1.backward();
    l1.dispose();
    const once = await grads(layers);
    const onceX = await x.grad!.read();
    const l2 = forward(x, layers, false);
    l2.backward();
    l2.dispose();
    const twice = await grads(layers);
    twice.forEach((v, k) => assertClose(v, once[k].map((a) => 2 * a), 0, `accumulated grad ${k}`));
    // x feeds three ops of layer 0, each adding into x.grad: the sums are ordered differently.
    assertClose(await x.grad!.read(), onceX.map((a) => 2 * a), TOL.f32, "accumulated grad of x");
    disposeAll(layers, x);
  },
);
