// The profiler (src/gpu/profile.ts): every dispatch, copy and readback of a profiled region is
// counted once, charged to its kernel family and model part (backward kernels to
// "backward:<part>", checkpoint recomputes to "recompute:<part>"), timed on the device where the
// adapter has timestamp queries, and results are unchanged by profiling.

import assert from "node:assert/strict";
import { gpu, GPU_TEST, rand } from "./util.ts";
import {
  formatProfile,
  instrumentMethod,
  profilePart,
  startProfile,
  stopProfile,
} from "../src/gpu/profile.ts";
import { add, checkpoint, linear, siluMul, sum, Tensor, tidy } from "../src/tensor/mod.ts";

Deno.test({
  name: "profile: families, parts, backward and recompute labels, device time",
  ...GPU_TEST,
  fn: async () => {
    const g = await gpu();
    const x = Tensor.from(g, rand(24 * 32, 1), [24, 32]);
    const w = Tensor.from(g, rand(40 * 32, 2), [40, 32]);
    const u = Tensor.from(g, rand(40 * 32, 3), [40, 32]);
    w.requiresGrad = true;
    const model = {
      mlp: (h: Tensor) => siluMul(linear(h, w), linear(h, u)),
    };
    const run = () =>
      tidy(() => {
        const y = profilePart("block", () => checkpoint((h) => model.mlp(h), [x]));
        return sum(add(y, y));
      });
    // Unprofiled reference.
    const ref = run();
    ref.backward();
    const want = await ref.read();
    const gradWant = await w.grad!.read();
    w.grad!.dispose();
    w.grad = null;
    ref.dispose();

    const undo = instrumentMethod(model, "mlp", "mlp");
    const d0 = g.dispatches;
    await startProfile(g);
    await assert.rejects(() => startProfile(g), /already running/);
    const loss = run();
    loss.backward();
    const got = await loss.read();
    const report = await stopProfile(g);
    undo();
    const gradGot = await w.grad!.read();
    assert.deepEqual([...got], [...want]);
    assert.deepEqual([...gradGot], [...gradWant]);

    assert.deepEqual(report.dispatches, g.dispatches - d0);
    assert.deepEqual(report.readbacks, 1);
    const fam = new Map(report.families.map((r) => [r.name, r]));
    assert(fam.get("matmul")!.count >= 2 + 2 + 1, "forward, recompute and dW GEMMs");
    assert(fam.has("nn"), "siluMul counted under nn");
    const parts = new Set(report.parts.map((r) => r.name));
    for (const p of ["mlp", "backward:block", "recompute:mlp", "backward:mlp"]) {
      assert(parts.has(p), `part ${p} missing from ${[...parts]}`);
    }
    const count = report.families.reduce((s, r) => s + r.count, 0);
    assert.deepEqual(
      count,
      report.dispatches + report.copies + report.readbacks + countUploads(report),
    );
    if (g.features.timestampQuery) {
      assert.deepEqual(report.timing, "timestamp-query");
      assert(fam.get("matmul")!.gpuMs > 0, "matmul timed on the device");
      const share = report.families.reduce((s, r) => s + r.share, 0);
      assert(Math.abs(share - 1) < 1e-9, `shares sum to ${share}`);
    }
    assert(report.peakRssBytes > 0 && report.poolPeakBytes > 0);
    const text = formatProfile(report);
    assert(text.includes("| matmul |") && text.includes("| backward:mlp |"), text);
    for (const t of [x, w, u, loss]) t.dispose();
    (w.grad as Tensor | null)?.dispose();
  },
});

function countUploads(r: { families: { name: string; count: number }[] }): number {
  return r.families.find((f) => f.name === "upload")?.count ?? 0;
}

Deno.test({
  name: "profile: stop without start is an error; parts are free when not profiling",
  ...GPU_TEST,
  fn: async () => {
    const g = await gpu();
    await assert.rejects(() => stopProfile(g), /no profile running/);
    assert.deepEqual(profilePart("x", () => 7), 7);
  },
});
