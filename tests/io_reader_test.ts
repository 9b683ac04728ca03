// openTensors on directories and sharded indexes (safetensors and PyTorch), and writeStateDict
// sharding, naming and stale-file cleanup.

import assert from "node:assert/strict";
import { join } from "node:path";
import { openTensors, ShardedReader } from "../src/io/reader.ts";
import { writeStateDict } from "../src/io/state_dict.ts";
import { writeSafetensors } from "../src/io/safetensors.ts";

async function tmpDir(): Promise<string> {
  return await Deno.makeTempDir({ prefix: "siqvl_io_rd_" });
}

const tensors = () => [
  { name: "a", dtype: "F32" as const, shape: [4], data: new Float32Array([1, 2, 3, 4]) },
  { name: "b", dtype: "F32" as const, shape: [2, 2], data: new Float32Array([5, 6, 7, 8]) },
  { name: "c", dtype: "BF16" as const, shape: [2], data: new Uint16Array([0x3f80, 0x4000]) },
  { name: "d", dtype: "I64" as const, shape: [1], data: new BigInt64Array([3n]) },
];

Deno.test("writeStateDict + openTensors: single file and shards, both formats", async () => {
  const dir = await tmpDir();
  try {
    for (const format of ["safetensors", "bin"] as const) {
      // Single file.
      const one = await writeStateDict(dir, tensors(), { format });
      assert.deepEqual(one, [format === "bin" ? "pytorch_model.bin" : "model.safetensors"]);
      let r = await openTensors(dir);
      // safetensors lays tensors out by element size (I64 first), .bin keeps the given order.
      assert.deepEqual(r.keys(), format === "bin" ? ["a", "b", "c", "d"] : ["d", "a", "b", "c"]);
      assert.deepEqual([...await r.readF32("c")], [1, 2]);
      r.close();
      // Sharded with a 36-byte cap: a (16) + b (16) + c (4) fill shard 1; d (8) goes to shard 2.
      const files = await writeStateDict(dir, tensors(), { format, maxShardBytes: 36 });
      const base = format === "bin" ? "pytorch_model" : "model";
      const ext = format === "bin" ? "bin" : "safetensors";
      assert.deepEqual(files, [
        `${base}-00001-of-00002.${ext}`,
        `${base}-00002-of-00002.${ext}`,
        `${base}.${ext}.index.json`,
      ]);
      const listing = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
      assert.deepEqual(listing, [...files].sort(), "stale single file removed");
      const index = JSON.parse(await Deno.readTextFile(join(dir, files[2])));
      assert.deepEqual(index.metadata, { total_size: 44 });
      assert.equal(index.weight_map.d, files[1]);
      assert.equal(index.weight_map.a, files[0]);
      r = await openTensors(dir);
      assert.ok(r instanceof ShardedReader);
      assert.deepEqual(r.keys().sort(), ["a", "b", "c", "d"]);
      assert.deepEqual(r.metadata(), { total_size: "44" });
      assert.deepEqual(r.info("b"), { dtype: "F32", shape: [2, 2] });
      assert.deepEqual([...await r.readF32("b")], [5, 6, 7, 8]);
      assert.deepEqual([...await r.readF32("d")], [3]);
      assert.throws(() => r.info("zz"), /unknown tensor "zz" in .*index\.json/);
      r.close();
      // Next format's save replaces this one entirely.
    }
    const listing = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    assert.ok(listing.every((n) => n.startsWith("pytorch_model")), listing.join());
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("openTensors: directory preference, missing checkpoint, bad indexes", async () => {
  const dir = await tmpDir();
  try {
    await assert.rejects(
      () => openTensors(dir),
      /no checkpoint in directory .*looked for model\.safetensors/,
    );
    await assert.rejects(() => openTensors(join(dir, "nope")), /no such file or directory/);
    // Prefer safetensors over .bin when both exist.
    await writeStateDict(join(dir, "m"), tensors().slice(0, 1), { format: "bin" });
    await writeSafetensors(join(dir, "m", "model.safetensors"), {
      a: { dtype: "F32", shape: [1], data: new Float32Array([42]) },
    });
    const r = await openTensors(join(dir, "m"));
    assert.match(r.path, /model\.safetensors$/);
    assert.deepEqual([...await r.readF32("a")], [42]);
    r.close();

    const idx = (o: unknown) => {
      const p = join(dir, "model.safetensors.index.json");
      Deno.writeTextFileSync(p, typeof o === "string" ? o : JSON.stringify(o));
      return p;
    };
    await writeSafetensors(join(dir, "s1.safetensors"), {
      x: { dtype: "F32", shape: [1], data: new Float32Array([1]) },
    });
    await assert.rejects(() => openTensors(idx("{")), /invalid checkpoint index .*not JSON/);
    await assert.rejects(() => openTensors(idx({ metadata: {} })), /missing "weight_map" object/);
    await assert.rejects(
      () => openTensors(idx({ weight_map: { x: "../../etc/passwd" } })),
      /weight_map\["x"\] = "..\/..\/etc\/passwd" points outside/,
    );
    await assert.rejects(
      () => openTensors(idx({ weight_map: { x: "missing.safetensors" } })),
      /shard missing\.safetensors \(holding "x"\) is missing/,
    );
    await assert.rejects(
      () => openTensors(idx({ weight_map: { y: "s1.safetensors" } })),
      /maps "y" to s1\.safetensors, which has no such tensor/,
    );
    const ok = await openTensors(
      idx({ metadata: { total_size: 4 }, weight_map: { x: "s1.safetensors" } }),
    );
    assert.deepEqual([...await ok.readF32("x")], [1]);
    ok.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
