// The GPU finite check (issue 15, class 7): countNonFinite / nonFiniteCount against a plain
// TypeScript count on random never-zero inputs with NaN, +Inf and -Inf planted, over several
// tensors with one readback, and a tensor whose size is not a multiple of a workgroup's span.

import assert from "node:assert/strict";
import { gpu, GPU_TEST, rand } from "./util.ts";
import { noGrad, Tensor } from "../src/tensor/mod.ts";
import { countNonFinite, nonFiniteCount } from "../src/tensor/ops/finite.ts";

function reference(arrays: Float32Array[]): number {
  let n = 0;
  for (const a of arrays) for (const x of a) if (!Number.isFinite(x)) n++;
  return n;
}

Deno.test({
  name: "countNonFinite matches a plain count (NaN, ±Inf, several tensors, odd sizes)",
  ...GPU_TEST,
  fn: async () => {
    const g = await gpu();
    const sizes = [1, 7, 2048, 2049, 70_001];
    const arrays = sizes.map((n, i) => rand(n, 11 + i, -2, 2));
    const clean = noGrad(() => arrays.map((a) => Tensor.from(g, a, [a.length], "f32")));
    assert.equal(await nonFiniteCount(clean), 0);
    for (const t of clean) t.dispose();
    // Plant specials: NaN, +Inf, -Inf, and the largest finite / subnormal values (finite).
    arrays[0][0] = NaN;
    arrays[2][5] = Infinity;
    arrays[2][2047] = -Infinity;
    arrays[3][2048] = NaN; // the last element of an odd-sized tensor
    arrays[4][12345] = 3.4028234663852886e38; // finite
    arrays[4][54321] = 1e-45; // subnormal, finite
    for (let i = 0; i < 100; i++) arrays[4][(i * 613) % 70_001] = i % 2 ? Infinity : NaN;
    const want = reference(arrays);
    assert.ok(want > 100);
    const ts = noGrad(() => arrays.map((a) => Tensor.from(g, a, [a.length], "f32")));
    try {
      assert.equal(await nonFiniteCount(ts), want);
      // Each tensor alone adds up to the total.
      let sum = 0;
      for (const t of ts) sum += await nonFiniteCount([t]);
      assert.equal(sum, want);
      const c = countNonFinite(ts.slice(2, 3));
      assert.deepEqual([...await c.read()], [2]);
      c.dispose();
      const h = noGrad(() => Tensor.from(g, [1, 2], [2], "f16"));
      assert.throws(() => countNonFinite([h]), /only f32 tensors are checked/);
      h.dispose();
    } finally {
      for (const t of ts) t.dispose();
    }
  },
});
