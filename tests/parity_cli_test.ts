// `deno task fixture` end to end on tiny-a: the CLI runs every section, including the 10-step
// training replays, writes every `train.*` tensor of expected.safetensors, and they match.

import assert from "node:assert/strict";
import { join } from "node:path";
import { openTensors } from "../src/io/reader.ts";
import { GPU_TEST } from "./util.ts";

const FIX = new URL("./fixtures/tiny-a/", import.meta.url).pathname;
const CLI = new URL("../cli/fixture.ts", import.meta.url).pathname;

Deno.test("fixture CLI: writes and matches every train.* tensor of tiny-a", GPU_TEST, async () => {
  const dir = await Deno.makeTempDir();
  try {
    const out = join(dir, "out.safetensors");
    const p = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--unstable-webgpu", CLI, FIX, out],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(p.stdout);
    assert.equal(p.code, 0, new TextDecoder().decode(p.stderr));
    const exp = await openTensors(join(FIX, "expected.safetensors"));
    const got = await openTensors(out);
    try {
      const want = exp.keys().filter((k) => k.startsWith("train."));
      assert.ok(want.length >= 6, `expected.safetensors has train.* tensors (${want.length})`);
      const missing = want.filter((k) => !got.has(k));
      assert.deepEqual(missing, [], "every train.* tensor is written");
      for (const k of want) {
        // The printed comparison row of each: relative L2 error within 1e-4.
        const row = text.split("\n").find((l) => l.trim().startsWith(k + " "));
        assert.ok(row, `comparison row for ${k}`);
        const rel = Number(row!.trim().split(/\s+/)[1]);
        assert.ok(rel <= 1e-4, `${k}: relative error ${rel}`);
      }
    } finally {
      exp.close();
      got.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
