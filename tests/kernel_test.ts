// The named kernel-argument convention (src/gpu/kernel.ts): every layout an op declares matches
// its shader — uniform names in `struct P` order, binding names at their @binding numbers — so a
// renamed or reordered WGSL field fails here instead of shifting the others; and the positional
// arrays it builds put each named value in its slot.

import assert from "node:assert/strict";
import { kernel, KERNELS, wgslLayout } from "../src/gpu/kernel.ts";
import { loadShaderSources, SHADER_FILES } from "../src/gpu/shaders.ts";
import "../src/tensor/mod.ts";

Deno.test("kernel layouts match their WGSL (uniform order, binding names)", async () => {
  const sources = await loadShaderSources(SHADER_FILES);
  assert.ok(KERNELS.length >= 8, `only ${KERNELS.length} kernels declared`);
  for (const k of KERNELS) {
    const src = sources.get(k.shader);
    assert.ok(src, `kernel for unknown shader ${k.shader}`);
    const w = wgslLayout(src);
    assert.deepEqual([...k.layout.uniforms], w.uniforms, `${k.shader}: uniform fields`);
    k.layout.bindings.forEach((name, i) => {
      assert.equal(w.bindings.get(i + 1), name, `${k.shader}: @binding(${i + 1})`);
    });
    assert.equal(k.layout.bindings.length, w.bindings.size, `${k.shader}: binding count`);
  }
});

Deno.test("kernel: named arguments land in their positions; unknown names are errors", () => {
  const k = kernel("test_only", { uniforms: ["a", "b", "c"], bindings: ["x", "y", "z"] });
  KERNELS.pop(); // not a real shader
  assert.deepEqual(k.uniforms({ c: 7, a: 1 }), [1, 0, 7]);
  const buf = {} as GPUBuffer;
  const win = { buffer: buf, offset: 256, size: 16 };
  assert.deepEqual(k.bindings({ y: win }), [null, win]);
  assert.deepEqual(k.bindings({ z: { binding: () => win }, x: null }), [null, null, win]);
  assert.throws(() => k.uniforms({ d: 1 } as never), /no uniform "d"/);
  assert.throws(() => k.bindings({ w: win } as never), /no binding "w"/);
});
