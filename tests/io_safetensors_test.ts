// safetensors reader/writer: round trips in every dtype, lazy reads, validation of malformed
// headers before anything is allocated, atomic writes.

import assert from "node:assert/strict";
import { join } from "node:path";
import { MAX_HEADER_BYTES, SafetensorsReader, writeSafetensors } from "../src/io/safetensors.ts";
import { openTensors } from "../src/io/reader.ts";

async function tmpDir(): Promise<string> {
  return await Deno.makeTempDir({ prefix: "siqvl_io_st_" });
}

/** Build a safetensors file by hand from a header object and a buffer. */
function rawFile(header: unknown, buffer: Uint8Array, lenOverride?: bigint): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.byteLength + buffer.byteLength);
  new DataView(out.buffer).setBigUint64(0, lenOverride ?? BigInt(json.byteLength), true);
  out.set(json, 8);
  out.set(buffer, 8 + json.byteLength);
  return out;
}

const bytesOf = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

Deno.test("safetensors: round trip of every dtype, metadata, lazy reads, f32 conversion", async () => {
  const dir = await tmpDir();
  try {
    const path = join(dir, "m.safetensors");
    const f32 = new Float32Array([1.5, -2, 3.25, 0, 1e-3, 7]);
    // f16 bits: 1.0 = 0x3c00, -2.0 = 0xc000, 0.5 = 0x3800, 65504 = 0x7bff
    const f16 = new Uint16Array([0x3c00, 0xc000, 0x3800, 0x7bff]);
    // bf16 bits: 1.0 = 0x3f80, -3.0 = 0xc040, 0.15625 = 0x3e20
    const bf16 = new Uint16Array([0x3f80, 0xc040, 0x3e20]);
    const i64 = new BigInt64Array([5n, -7n, 1n << 40n]);
    const i32 = new Int32Array([-1, 2, 3, 2147483647]);
    const f64 = new Float64Array([0.1, -1e10]);
    const u8 = new Uint8Array([0, 255, 7]);
    const bool = new Uint8Array([1, 0, 1, 1]);
    const tensors = {
      "a.weight": { dtype: "F32" as const, shape: [2, 3], data: f32 },
      "h": { dtype: "F16" as const, shape: [4], data: f16 },
      "b": { dtype: "BF16" as const, shape: [3, 1], data: bf16 },
      "ids": { dtype: "I64" as const, shape: [3], data: i64 },
      "i": { dtype: "I32" as const, shape: [2, 2], data: i32 },
      "d": { dtype: "F64" as const, shape: [2], data: f64 },
      "u": { dtype: "U8" as const, shape: [3], data: u8 },
      "mask": { dtype: "BOOL" as const, shape: [2, 2], data: bool },
      "scalar": { dtype: "F32" as const, shape: [], data: new Float32Array([42]) },
      "empty": { dtype: "F32" as const, shape: [0, 4], data: new Float32Array(0) },
    };
    await writeSafetensors(path, tensors, { format: "pt", note: "hello" });

    // The data buffer starts at a multiple of 8; header is space padded.
    const bytes = await Deno.readFile(path);
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    assert.equal(n % 8, 0);
    const headerText = new TextDecoder().decode(bytes.subarray(8, 8 + n));
    assert.ok(headerText.startsWith("{"));
    assert.match(headerText, / *$/);
    assert.deepEqual(JSON.parse(headerText).__metadata__, { format: "pt", note: "hello" });

    const r = await openTensors(path);
    try {
      assert.deepEqual(r.keys().sort(), Object.keys(tensors).sort());
      assert.deepEqual(r.metadata(), { format: "pt", note: "hello" });
      assert.deepEqual(r.info("a.weight"), { dtype: "F32", shape: [2, 3] });
      assert.deepEqual(r.info("scalar"), { dtype: "F32", shape: [] });
      for (const [name, t] of Object.entries(tensors)) {
        assert.deepEqual(await r.read(name), bytesOf(t.data), name);
      }
      assert.deepEqual(await r.readF32("a.weight"), f32);
      assert.deepEqual([...await r.readF32("h")], [1, -2, 0.5, 65504]);
      assert.deepEqual([...await r.readF32("b")], [1, -3, 0.15625]);
      assert.deepEqual([...await r.readF32("ids")], [5, -7, 2 ** 40]);
      assert.deepEqual([...await r.readF32("i")], [-1, 2, 3, 2147483648]);
      assert.deepEqual([...await r.readF32("d")], [Math.fround(0.1), -1e10]);
      assert.deepEqual([...await r.readF32("mask")], [1, 0, 1, 1]);
      assert.deepEqual([...await r.readF32("scalar")], [42]);
      assert.equal((await r.readF32("empty")).length, 0);
      // Concurrent reads of one handle must not interleave.
      const all = await Promise.all(Object.keys(tensors).map((k) => r.read(k)));
      Object.values(tensors).forEach((t, i) => assert.deepEqual(all[i], bytesOf(t.data)));
      assert.throws(() => r.info("nope"), /unknown tensor "nope" in .*m\.safetensors/);
      await assert.rejects(() => r.read("nope"), /unknown tensor "nope"/);
    } finally {
      r.close();
    }
    await assert.rejects(() => r.read("h"), /closed/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("safetensors: lazy producers, list form, sorted keys, and writer validation", async () => {
  const dir = await tmpDir();
  try {
    const path = join(dir, "lazy.safetensors");
    let produced = 0;
    await writeSafetensors(
      path,
      [
        { name: "z", dtype: "F32", shape: [2], data: () => (produced++, new Float32Array([1, 2])) },
        {
          name: "a",
          dtype: "I32",
          shape: [1],
          data: () => Promise.resolve((produced++, new Int32Array([9]))),
        },
      ],
      undefined,
      { sortKeys: true },
    );
    assert.equal(produced, 2);
    const r = await SafetensorsReader.open(path);
    assert.deepEqual(r.keys(), ["a", "z"]); // sorted → a's data first
    assert.deepEqual(r.span("a"), { offset: r.span("z").offset - 4, length: 4 });
    assert.deepEqual([...await r.readF32("z")], [1, 2]);
    r.close();

    await assert.rejects(
      () =>
        writeSafetensors(join(dir, "x.safetensors"), {
          w: { dtype: "F32", shape: [3], data: new Float32Array(2) },
        }),
      /tensor "w" .*shape \[3\] × F32 needs 12 bytes, got 8/,
    );
    await assert.rejects(
      () =>
        writeSafetensors(join(dir, "x.safetensors"), {
          // deno-lint-ignore no-explicit-any
          w: { dtype: "F8_E4M3" as any, shape: [1], data: new Uint8Array(1) },
        }),
      /unsupported dtype F8_E4M3 in .*x\.safetensors:w/,
    );
    await assert.rejects(
      () =>
        writeSafetensors(join(dir, "x.safetensors"), {
          w: { dtype: "F32", shape: [-1], data: new Uint8Array(0) },
        }),
      /shape \[-1\] is not a list of non-negative integers/,
    );
    // A producer returning the wrong size fails the write and leaves no file behind.
    await assert.rejects(
      () =>
        writeSafetensors(join(dir, "x.safetensors"), [
          { name: "ok", dtype: "F32", shape: [1], data: new Float32Array(1) },
          { name: "bad", dtype: "F32", shape: [4], data: () => new Float32Array(3) },
        ]),
      /tensor "bad" .*needs 16 bytes, got 12/,
    );
    const left = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    assert.deepEqual(left, ["lazy.safetensors"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("safetensors: a failed save keeps the previous file intact", async () => {
  const dir = await tmpDir();
  try {
    const path = join(dir, "ckpt.safetensors");
    await writeSafetensors(path, {
      w: { dtype: "F32", shape: [2], data: new Float32Array([1, 2]) },
    });
    const before = await Deno.readFile(path);
    await assert.rejects(
      () =>
        writeSafetensors(path, [
          { name: "w", dtype: "F32", shape: [2], data: new Float32Array([3, 4]) },
          {
            name: "boom",
            dtype: "F32",
            shape: [1],
            data: () => Promise.reject(new Error("crash mid-save")),
          },
        ]),
      /crash mid-save/,
    );
    assert.deepEqual(await Deno.readFile(path), before);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["ckpt.safetensors"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("safetensors: a tensor past 4 GiB of a sparse 5 GB file is read by seeking", async () => {
  // The file is sparse: only the header and the last tensor hold data on disk. Reading the small
  // tensor must neither read nor allocate the 5 GB one.
  const dir = await tmpDir();
  try {
    const path = join(dir, "big.safetensors");
    const big = 5_000_000_000;
    const header = {
      big: { dtype: "U8", shape: [50_000, 100_000], data_offsets: [0, big] },
      small: { dtype: "F32", shape: [2], data_offsets: [big, big + 8] },
    };
    const json = new TextEncoder().encode(JSON.stringify(header));
    const f = await Deno.open(path, { write: true, create: true });
    try {
      const len = new Uint8Array(8);
      new DataView(len.buffer).setBigUint64(0, BigInt(json.byteLength), true);
      await f.write(len);
      await f.write(json);
      await f.truncate(8 + json.byteLength + big);
      await f.seek(8 + json.byteLength + big, Deno.SeekMode.Start);
      await f.write(new Uint8Array(new Float32Array([3.5, -1]).buffer));
    } finally {
      f.close();
    }
    const r = await openTensors(path);
    assert.deepEqual(r.info("big"), { dtype: "U8", shape: [50_000, 100_000] });
    assert.deepEqual([...await r.readF32("small")], [3.5, -1]);
    r.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("safetensors: malformed files are refused with specific errors", async () => {
  const dir = await tmpDir();
  try {
    const cases: [string, Uint8Array, RegExp][] = [
      ["short", new Uint8Array(5), /is 5 bytes \(< 8\)/],
      [
        "huge-header",
        rawFile({}, new Uint8Array(0), BigInt(MAX_HEADER_BYTES + 1)),
        /header length 100000001 exceeds 100000000 bytes/,
      ],
      [
        "header-past-eof",
        rawFile({}, new Uint8Array(0), 1000n),
        /header length 1000 exceeds the file size/,
      ],
      ["u64-max", rawFile({}, new Uint8Array(0), (1n << 64n) - 1n), /exceeds 100000000 bytes/],
      [
        "not-json",
        (() => {
          const f = rawFile({}, new Uint8Array(0));
          f[8] = 0x41;
          return f;
        })(),
        /not JSON/,
      ],
      ["array", rawFile([1, 2], new Uint8Array(0)), /expected a JSON object/],
      [
        "bad-dtype",
        rawFile({ w: { dtype: "Q4", shape: [1], data_offsets: [0, 1] } }, new Uint8Array(1)),
        /unknown dtype "Q4" in .*bad-dtype:w/,
      ],
      [
        "f8",
        rawFile({ w: { dtype: "F8_E4M3", shape: [1], data_offsets: [0, 1] } }, new Uint8Array(1)),
        /unsupported dtype F8_E4M3 in .*f8:w/,
      ],
      [
        "bad-shape",
        rawFile({ w: { dtype: "F32", shape: [1.5], data_offsets: [0, 4] } }, new Uint8Array(4)),
        /bad-shape:w: shape \[1.5\] is not a list/,
      ],
      [
        "span-mismatch",
        rawFile({ w: { dtype: "F32", shape: [2, 2], data_offsets: [0, 12] } }, new Uint8Array(12)),
        /shape \[2, 2\] × F32 is 16 bytes but data_offsets \[0, 12\] span 12/,
      ],
      [
        "past-end",
        rawFile({ w: { dtype: "F32", shape: [4], data_offsets: [0, 16] } }, new Uint8Array(8)),
        /data_offsets end 16 is past the data buffer \(8 bytes/,
      ],
      [
        "overlap",
        rawFile({
          a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
          b: { dtype: "F32", shape: [2], data_offsets: [4, 12] },
        }, new Uint8Array(12)),
        /"a" and "b" overlap/,
      ],
      [
        "hole",
        rawFile({ a: { dtype: "F32", shape: [1], data_offsets: [4, 8] } }, new Uint8Array(8)),
        /4 unused bytes before "a"/,
      ],
      [
        "trailing",
        rawFile({ a: { dtype: "F32", shape: [1], data_offsets: [0, 4] } }, new Uint8Array(8)),
        /tensors cover 4 bytes but the data buffer is 8 bytes/,
      ],
      [
        "bad-offsets",
        rawFile({ a: { dtype: "F32", shape: [1], data_offsets: [8, 4] } }, new Uint8Array(8)),
        /data_offsets \[8,4\] must be \[begin, end\]/,
      ],
      [
        "bad-meta",
        rawFile({ __metadata__: { n: 1 } }, new Uint8Array(0)),
        /__metadata__\["n"\] must be a string/,
      ],
    ];
    for (const [name, bytes, re] of cases) {
      const p = join(dir, name);
      await Deno.writeFile(p, bytes);
      await assert.rejects(() => SafetensorsReader.open(p), re, name);
    }
    await assert.rejects(() => SafetensorsReader.open(join(dir, "missing")), /no such file/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// Cross-check against an independent writer when python3 + numpy are present.
const HAS_NUMPY = await new Deno.Command("python3", { args: ["-c", "import numpy"] }).output()
  .then((o) => o.success, () => false);

Deno.test({
  name: "safetensors: files written by another implementation (python) read back",
  ignore: !HAS_NUMPY,
}, async () => {
  const dir = await tmpDir();
  try {
    const script = `
import json, struct, sys, numpy as np
a = np.arange(6, dtype=np.float32).reshape(2, 3) / 4
b = np.array([1, -2, 3], dtype=np.int64)
c = np.array([0.5, -1.25], dtype=np.float16)
bufs, header, off = [], {"__metadata__": {"format": "pt"}}, 0
for name, arr, dt in [("b", b, "I64"), ("a", a, "F32"), ("c", c, "F16")]:
    raw = arr.tobytes(); header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [off, off + len(raw)]}
    bufs.append(raw); off += len(raw)
h = json.dumps(header).encode()
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(h))); f.write(h); f.write(b"".join(bufs))
`;
    const path = join(dir, "py.safetensors");
    const out = await new Deno.Command("python3", { args: ["-c", script, path] }).output();
    assert.ok(out.success, new TextDecoder().decode(out.stderr));
    const r = await openTensors(path);
    assert.deepEqual([...await r.readF32("a")], [0, 0.25, 0.5, 0.75, 1, 1.25]);
    assert.deepEqual([...await r.readF32("b")], [1, -2, 3]);
    assert.deepEqual([...await r.readF32("c")], [0.5, -1.25]);
    assert.deepEqual(r.info("a"), { dtype: "F32", shape: [2, 3] });
    r.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
