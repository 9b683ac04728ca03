// PyTorch .bin: zip reader/writer (zip64 included), the allow-listed unpickler (hand-built
// pickles: tied weights, views, Parameter, planted os.system / posix.system), the writer's
// round trip, legacy-format refusal, and cross-checks with python's zipfile/pickle if present.

import assert from "node:assert/strict";
import { join } from "node:path";
import { crc32, ZipReader, ZipWriter } from "../src/io/zip.ts";
import { PickleWriter, unpickle } from "../src/io/pickle.ts";
import { TorchBinReader, writeTorchBin } from "../src/io/torch_bin.ts";
import { openTensors } from "../src/io/reader.ts";

const te = new TextEncoder();
const enc = (s: string) => [...te.encode(s)];
const u32 = (v: number) => [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff];

// Opcodes, written out by hand.
const PROTO2 = [0x80, 0x02];
const MARK = 0x28, STOP = 0x2e, TUPLE = 0x74, EMPTY_TUPLE = 0x29, REDUCE = 0x52;
const EMPTY_DICT = 0x7d, SETITEMS = 0x75, BINPERSID = 0x51, NEWFALSE = 0x89, NEWTRUE = 0x88;
const TUPLE1 = 0x85, TUPLE2 = 0x86, BUILD = 0x62, BINGET = 0x68, BINPUT = 0x71, NEWOBJ = 0x81;
const FRAME = 0x95, MEMOIZE = 0x94, STACK_GLOBAL = 0x93;
const global = (m: string, n: string) => [0x63, ...enc(`${m}\n${n}\n`)];
const str = (s: string) => [0x58, ...u32(te.encode(s).length), ...enc(s)];
const shortStr = (s: string) => [0x8c, te.encode(s).length, ...enc(s)];
const int1 = (v: number) => [0x4b, v];
const orderedDict = () => [...global("collections", "OrderedDict"), EMPTY_TUPLE, REDUCE];
const storage = (cls: string, key: string, numel: number) => [
  MARK,
  ...str("storage"),
  ...global("torch", cls),
  ...str(key),
  ...str("cpu"),
  ...int1(numel),
  TUPLE,
  BINPERSID,
];
const tuple = (vals: number[]) =>
  vals.length === 0
    ? [EMPTY_TUPLE]
    : vals.length === 1
    ? [...int1(vals[0]), TUPLE1]
    : vals.length === 2
    ? [...int1(vals[0]), ...int1(vals[1]), TUPLE2]
    : [MARK, ...vals.flatMap(int1), TUPLE];
const rebuild = (st: number[], offset: number, size: number[], stride: number[]) => [
  ...global("torch._utils", "_rebuild_tensor_v2"),
  MARK,
  ...st,
  ...int1(offset),
  ...tuple(size),
  ...tuple(stride),
  NEWFALSE,
  ...orderedDict(),
  TUPLE,
  REDUCE,
];

async function tmpDir(): Promise<string> {
  return await Deno.makeTempDir({ prefix: "siqvl_io_pt_" });
}

/** Write a zip with the given records using the library's writer. */
async function writeZip(
  path: string,
  records: [string, Uint8Array][],
  forceZip64 = false,
): Promise<void> {
  const f = await Deno.open(path, { write: true, create: true, truncate: true });
  try {
    const z = new ZipWriter(f, { align: 64, forceZip64 });
    for (const [n, d] of records) await z.add(n, d);
    await z.finish();
  } finally {
    f.close();
  }
}

const f32bytes = (a: number[]) => new Uint8Array(new Float32Array(a).buffer);

Deno.test("zip: reader reads what the writer wrote, aligned, with and without zip64", async () => {
  const dir = await tmpDir();
  try {
    for (const force of [false, true]) {
      const path = join(dir, `t${force}.zip`);
      const recs: [string, Uint8Array][] = [
        ["top/a", te.encode("hello")],
        ["top/data/0", new Uint8Array(1000).map((_, i) => i & 0xff)],
        ["top/empty", new Uint8Array(0)],
      ];
      await writeZip(path, recs, force);
      const z = await ZipReader.open(path);
      assert.deepEqual(z.entries.map((e) => e.name), recs.map((r) => r[0]));
      for (const [n, d] of recs) {
        const e = z.get(n)!;
        assert.equal(e.dataOffset % 64, 0, `${n} aligned`);
        assert.equal(e.crc32, crc32(d));
        assert.deepEqual(await z.read(n), d);
      }
      assert.deepEqual(await z.readRange("top/data/0", 10, 3), new Uint8Array([10, 11, 12]));
      await assert.rejects(() => z.readRange("top/a", 3, 5), /outside entry "top\/a"/);
      await assert.rejects(() => z.read("nope"), /no entry "nope"/);
      z.close();
    }
    assert.equal(crc32(te.encode("123456789")), 0xcbf43926);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("zip: corrupt archives and compressed entries are refused", async () => {
  const dir = await tmpDir();
  try {
    const good = join(dir, "g.zip");
    await writeZip(good, [["p/x", te.encode("abc")]]);
    const bytes = await Deno.readFile(good);
    // Truncated: the end record is gone.
    const p1 = join(dir, "trunc.zip");
    await Deno.writeFile(p1, bytes.subarray(0, bytes.length - 10));
    await assert.rejects(() => ZipReader.open(p1), /no end-of-central-directory record/);
    // Compression method 8 (deflate) in the central directory.
    const p2 = join(dir, "deflate.zip");
    const b2 = bytes.slice();
    const cdOff = new DataView(b2.buffer).getUint32(b2.length - 6, true);
    new DataView(b2.buffer).setUint16(cdOff + 10, 8, true);
    await Deno.writeFile(p2, b2);
    await assert.rejects(() => ZipReader.open(p2), /compression method 8 \(only STORED/);
    // Central directory pointing past the end of the file.
    const p3 = join(dir, "cd.zip");
    const b3 = bytes.slice();
    new DataView(b3.buffer).setUint32(b3.length - 6, 1 << 30, true);
    await Deno.writeFile(p3, b3);
    await assert.rejects(() => ZipReader.open(p3), /central directory .* is outside the file/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("pickle: planted os.system / posix.system are refused by name, nothing runs", async () => {
  const dir = await tmpDir();
  try {
    const marker = join(dir, "pwned");
    const globals = new Map([["collections.OrderedDict", { call: () => new Map() }]]);
    const cmd = str(`touch ${marker}`);
    const viaGlobal = [...PROTO2, ...global("posix", "system"), ...cmd, TUPLE1, REDUCE, STOP];
    const viaGlobalOs = [...PROTO2, ...global("os", "system"), ...cmd, TUPLE1, REDUCE, STOP];
    const viaStack = [
      0x80,
      4,
      FRAME,
      ...[40, 0, 0, 0, 0, 0, 0, 0],
      ...shortStr("posix"),
      MEMOIZE,
      ...shortStr("system"),
      MEMOIZE,
      STACK_GLOBAL,
      MEMOIZE,
      ...cmd,
      TUPLE1,
      REDUCE,
      STOP,
    ];
    const viaStackOs = [
      ...PROTO2,
      ...str("os"),
      ...str("system"),
      STACK_GLOBAL,
      ...cmd,
      TUPLE1,
      REDUCE,
      STOP,
    ];
    // Hidden inside an otherwise normal state dict.
    const nested = [
      ...PROTO2,
      ...orderedDict(),
      MARK,
      ...str("w"),
      ...global("builtins", "eval"),
      ...str("1+1"),
      TUPLE1,
      REDUCE,
      SETITEMS,
      STOP,
    ];
    for (
      const [bytes, name] of [
        [viaGlobal, "posix.system"],
        [viaGlobalOs, "os.system"],
        [viaStack, "posix.system"],
        [viaStackOs, "os.system"],
        [nested, "builtins.eval"],
      ] as const
    ) {
      assert.throws(
        () => unpickle(new Uint8Array(bytes), { file: "evil.pkl", globals }),
        new RegExp(`^Error: refusing pickle global "${name.replace(".", "\\.")}" in evil\\.pkl$`),
      );
    }
    // And inside a real-looking checkpoint.
    const ckpt = join(dir, "evil.bin");
    await writeZip(ckpt, [["archive/data.pkl", new Uint8Array(viaStack)], [
      "archive/version",
      te.encode("3\n"),
    ]]);
    await assert.rejects(
      () => TorchBinReader.open(ckpt),
      (e: Error) => e.message === `refusing pickle global "posix.system" in ${ckpt}`,
    );
    await assert.rejects(() => Deno.stat(marker), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("pickle: unsupported opcodes and malformed streams give specific errors", () => {
  const globals = new Map();
  const o = { file: "x.pkl", globals };
  // INST (0x69) executes constructors in python: not in the allow-list.
  assert.throws(
    () => unpickle(new Uint8Array([...PROTO2, 0x69, ...enc("os\nsystem\n"), STOP]), o),
    /unsupported pickle opcode 0x69 \(INST\) at byte 2 in x\.pkl/,
  );
  assert.throws(() => unpickle(new Uint8Array([...PROTO2, ...str("abc")]), o), /missing STOP/);
  assert.throws(
    () => unpickle(new Uint8Array([...PROTO2, 0x58, 0xff, 0xff, 0xff, 0x7f]), o),
    /truncated/,
  );
  assert.throws(
    () => unpickle(new Uint8Array([...PROTO2, BINGET, 3, STOP]), o),
    /memo key 3 not defined/,
  );
  assert.throws(() => unpickle(new Uint8Array([...PROTO2, STOP]), o), /stack underflow/);
  assert.throws(() => unpickle(new Uint8Array([...PROTO2, BINPERSID, STOP]), o), /stack underflow/);
  assert.throws(
    () => unpickle(new Uint8Array([...PROTO2, ...str("k"), BINPERSID, STOP]), o),
    /persistent ids are not allowed/,
  );
  // Values: ints of every width, floats, strings, containers, memo.
  const v = unpickle(
    new Uint8Array([
      ...PROTO2,
      EMPTY_DICT,
      BINPUT,
      0,
      MARK,
      ...str("a"),
      0x4a,
      ...u32(-5 >>> 0),
      ...str("b"),
      0x8a,
      9,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      1, // LONG1 2^64
      ...str("c"),
      0x47,
      0x3f,
      0xf8,
      0,
      0,
      0,
      0,
      0,
      0, // BINFLOAT 1.5
      ...str("d"),
      0x5d,
      MARK,
      NEWTRUE,
      0x4e,
      0x4d,
      0x34,
      0x12,
      0x65, // [True, None, 0x1234]
      ...str("e"),
      BINGET,
      0,
      SETITEMS,
      STOP,
    ]),
    o,
  ) as Map<string, unknown>;
  assert.equal(v.get("a"), -5);
  assert.equal(v.get("b"), 1n << 64n);
  assert.equal(v.get("c"), 1.5);
  assert.deepEqual(v.get("d"), [true, null, 0x1234]);
  assert.equal(v.get("e"), v);
  // PickleWriter ints round trip through the reader (all widths, negative, LONG1).
  for (const n of [0, 255, 256, 65535, 65536, -1, -(2 ** 31), 2 ** 31, 2 ** 40, -(2 ** 50)]) {
    const b = new PickleWriter().proto(2).int(n).stop().bytes();
    assert.equal(unpickle(b, o), n);
  }
});

Deno.test("torch .bin: hand-built pickle — tied weights, view with offset, transposed view, Parameter", async () => {
  const dir = await tmpDir();
  try {
    // storage 0: 6 floats; storage 1: 10 floats; storage 2: 3 bf16; storage 3: 1 f16
    const s0 = [1, 2, 3, 4, 5, 6];
    const s1 = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
    const s2 = new Uint8Array(new Uint16Array([0x3f80, 0xc000, 0x4040]).buffer); // 1, -2, 3
    const s3 = new Uint8Array(new Uint16Array([0x3c00]).buffer); // 1.0
    const pkl = new Uint8Array([
      ...PROTO2,
      ...orderedDict(),
      BINPUT,
      0,
      MARK,
      // embed.weight: [2, 3] on storage 0
      ...str("model.embed_tokens.weight"),
      ...rebuild(storage("FloatStorage", "0", 6), 0, [2, 3], [3, 1]),
      // lm_head.weight: tied, same storage key "0"
      ...str("lm_head.weight"),
      ...rebuild(storage("FloatStorage", "0", 6), 0, [2, 3], [3, 1]),
      // view: rows 1..2 of storage 1 seen as [2, 2] from offset 3 → [3, 4, 5, 6]
      ...str("view"),
      ...rebuild(storage("FloatStorage", "1", 10), 3, [2, 2], [2, 1]),
      // transposed view of storage 0: [3, 2], stride [1, 3] → [[1,4],[2,5],[3,6]]
      ...str("t"),
      ...rebuild(storage("FloatStorage", "0", 6), 0, [3, 2], [1, 3]),
      // strided: every other element of storage 1 from offset 1 → [1, 3, 5, 7]
      ...str("every_other"),
      ...rebuild(storage("FloatStorage", "1", 10), 1, [4], [2]),
      // Parameter via _rebuild_parameter(tensor, requires_grad, hooks)
      ...str("p"),
      ...global("torch._utils", "_rebuild_parameter"),
      ...rebuild(storage("BFloat16Storage", "2", 3), 0, [3], [1]),
      NEWTRUE,
      ...orderedDict(),
      0x87,
      REDUCE,
      // Parameter via NEWOBJ, 0-d f16
      ...str("scalar"),
      ...global("torch.nn.parameter", "Parameter"),
      ...rebuild(storage("HalfStorage", "3", 1), 0, [], []),
      TUPLE1,
      NEWOBJ,
      SETITEMS,
      // OrderedDict state with _metadata (BUILD)
      EMPTY_DICT,
      ...str("_metadata"),
      ...orderedDict(),
      MARK,
      ...str(""),
      EMPTY_DICT,
      ...str("version"),
      ...int1(1),
      0x73,
      SETITEMS,
      0x73,
      BUILD,
      STOP,
    ]);
    const path = join(dir, "pytorch_model.bin");
    await writeZip(path, [
      ["pytorch_model/data.pkl", pkl],
      ["pytorch_model/byteorder", te.encode("little")],
      ["pytorch_model/data/0", f32bytes(s0)],
      ["pytorch_model/data/1", f32bytes(s1)],
      ["pytorch_model/data/2", s2],
      ["pytorch_model/data/3", s3],
      ["pytorch_model/version", te.encode("3\n")],
    ]);
    const r = await openTensors(path);
    assert.ok(r instanceof TorchBinReader);
    assert.deepEqual(r.keys(), [
      "model.embed_tokens.weight",
      "lm_head.weight",
      "view",
      "t",
      "every_other",
      "p",
      "scalar",
    ]);
    assert.deepEqual(r.info("lm_head.weight"), { dtype: "F32", shape: [2, 3] });
    assert.deepEqual([...await r.readF32("model.embed_tokens.weight")], s0);
    assert.deepEqual([...await r.readF32("lm_head.weight")], s0);
    assert.equal(r.storageOf("lm_head.weight").key, r.storageOf("model.embed_tokens.weight").key);
    assert.deepEqual([...await r.readF32("view")], [3, 4, 5, 6]);
    assert.deepEqual([...await r.readF32("t")], [1, 4, 2, 5, 3, 6]);
    assert.deepEqual([...await r.readF32("every_other")], [1, 3, 5, 7]);
    assert.deepEqual(r.info("p"), { dtype: "BF16", shape: [3] });
    assert.deepEqual(await r.read("p"), s2);
    assert.deepEqual([...await r.readF32("p")], [1, -2, 3]);
    assert.deepEqual(r.info("scalar"), { dtype: "F16", shape: [] });
    assert.deepEqual([...await r.readF32("scalar")], [1]);
    assert.throws(() => r.info("nope"), /unknown tensor "nope" in .*pytorch_model\.bin/);
    r.close();

    // A view reaching past its storage is refused at open.
    const bad = join(dir, "bad.bin");
    await writeZip(bad, [
      [
        "archive/data.pkl",
        new Uint8Array([
          ...PROTO2,
          ...orderedDict(),
          MARK,
          ...str("w"),
          ...rebuild(storage("FloatStorage", "0", 6), 4, [2, 2], [2, 1]),
          SETITEMS,
          STOP,
        ]),
      ],
      ["archive/data/0", f32bytes(s0)],
    ]);
    await assert.rejects(
      () => TorchBinReader.open(bad),
      /tensor "w" \(shape \[2, 2\], offset 4, stride \[2, 1\]\) reaches element 7 of storage 0 which has 6/,
    );
    // Storage record size disagreeing with numel.
    const bad2 = join(dir, "bad2.bin");
    await writeZip(bad2, [
      [
        "archive/data.pkl",
        new Uint8Array([
          ...PROTO2,
          ...orderedDict(),
          MARK,
          ...str("w"),
          ...rebuild(storage("FloatStorage", "0", 6), 0, [6], [1]),
          SETITEMS,
          STOP,
        ]),
      ],
      ["archive/data/0", f32bytes([1, 2, 3])],
    ]);
    await assert.rejects(
      () => TorchBinReader.open(bad2),
      /storage 0 holds 6 × F32 \(24 bytes\) but record archive\/data\/0 is 12 bytes/,
    );
    // Missing storage record.
    const bad3 = join(dir, "bad3.bin");
    await writeZip(bad3, [
      [
        "archive/data.pkl",
        new Uint8Array([
          ...PROTO2,
          ...orderedDict(),
          MARK,
          ...str("w"),
          ...rebuild(storage("FloatStorage", "7", 6), 0, [6], [1]),
          SETITEMS,
          STOP,
        ]),
      ],
    ]);
    await assert.rejects(() => TorchBinReader.open(bad3), /missing record archive\/data\/7/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("torch .bin: legacy format and non-checkpoints are refused clearly", async () => {
  const dir = await tmpDir();
  try {
    const legacy = join(dir, "old.bin");
    // PROTO 2, LONG1 10 bytes = 0x1950A86A20F9469CFC6C little-endian, STOP
    await Deno.writeFile(
      legacy,
      new Uint8Array([
        0x80,
        0x02,
        0x8a,
        0x0a,
        0x6c,
        0xfc,
        0x9c,
        0x46,
        0xf9,
        0x20,
        0x6a,
        0xa8,
        0x50,
        0x19,
        0x2e,
      ]),
    );
    await assert.rejects(
      () => openTensors(legacy),
      /unsupported legacy \(pre-1\.6, non-zip\) torch\.save format in .*old\.bin/,
    );
    const junk = join(dir, "junk.bin");
    await Deno.writeFile(junk, te.encode("hello world, not a checkpoint"));
    await assert.rejects(() => openTensors(junk), /not a PyTorch zip checkpoint/);
    // Top level not a dict (e.g. a list of tensors).
    const list = join(dir, "list.bin");
    await writeZip(list, [["a/data.pkl", new Uint8Array([...PROTO2, 0x5d, STOP])]]);
    await assert.rejects(() => openTensors(list), /top level is not a state dict/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("torch .bin: writer round trip with tied storage, every dtype, atomic failure", async () => {
  const dir = await tmpDir();
  try {
    const path = join(dir, "pytorch_model.bin");
    const emb = new Float32Array([1, 2, 3, 4, 5, 6]);
    const tensors = [
      { name: "model.embed_tokens.weight", dtype: "F32" as const, shape: [3, 2], data: emb },
      { name: "lm_head.weight", dtype: "F32" as const, shape: [3, 2], data: emb }, // tied
      { name: "h", dtype: "F16" as const, shape: [2], data: new Uint16Array([0x3c00, 0x4000]) },
      { name: "b", dtype: "BF16" as const, shape: [1, 2], data: new Uint16Array([0x3f80, 0xbf80]) },
      { name: "l", dtype: "I64" as const, shape: [2], data: new BigInt64Array([-3n, 1n << 40n]) },
      { name: "i", dtype: "I32" as const, shape: [1], data: new Int32Array([7]) },
      { name: "d", dtype: "F64" as const, shape: [1], data: new Float64Array([0.5]) },
      { name: "m", dtype: "BOOL" as const, shape: [3], data: new Uint8Array([1, 0, 1]) },
      { name: "s", dtype: "F32" as const, shape: [], data: new Float32Array([9]) },
      { name: "z", dtype: "U8" as const, shape: [0], data: new Uint8Array(0) },
    ];
    await writeTorchBin(path, tensors);
    const z = await ZipReader.open(path);
    const names = z.entries.map((e) => e.name);
    assert.equal(names[0], "archive/data.pkl");
    assert.ok(names.includes("archive/version") && names.includes("archive/byteorder"));
    // 9 distinct storages: the tied pair shares one.
    assert.equal(names.filter((n) => n.startsWith("archive/data/")).length, 9);
    for (const e of z.entries) assert.equal(e.dataOffset % 64, 0, e.name);
    z.close();

    const r = await TorchBinReader.open(path);
    assert.deepEqual(r.keys(), tensors.map((t) => t.name));
    for (const t of tensors) {
      assert.deepEqual(r.info(t.name), { dtype: t.dtype, shape: t.shape });
      const want = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
      assert.deepEqual(await r.read(t.name), want, t.name);
    }
    assert.equal(r.storageOf("lm_head.weight").key, r.storageOf("model.embed_tokens.weight").key);
    assert.deepEqual([...await r.readF32("b")], [1, -1]);
    r.close();

    // zip64 form reads back too.
    const p64 = join(dir, "z64.bin");
    await writeTorchBin(p64, tensors.slice(0, 3), { forceZip64: true, prefix: "z64" });
    const r64 = await TorchBinReader.open(p64);
    assert.deepEqual([...await r64.readF32("lm_head.weight")], [...emb]);
    r64.close();

    // Unsupported dtype for torch storages.
    await assert.rejects(
      () =>
        writeTorchBin(join(dir, "u.bin"), {
          x: { dtype: "U32", shape: [1], data: new Uint32Array(1) },
        }),
      /unsupported dtype U32 in .*u\.bin:x/,
    );
    // Failure mid-save leaves the old file untouched and no temp file behind.
    const before = await Deno.readFile(path);
    await assert.rejects(
      () =>
        writeTorchBin(path, [
          { name: "a", dtype: "F32", shape: [1], data: new Float32Array(1) },
          {
            name: "b",
            dtype: "F32",
            shape: [1],
            data: () => Promise.reject(new Error("disk gone")),
          },
        ]),
      /disk gone/,
    );
    assert.deepEqual(await Deno.readFile(path), before);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), [
      "pytorch_model.bin",
      "z64.bin",
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ------------------------------------------------------------------------------------------
// Cross-checks with python's own zipfile and pickle (stand-in torch module; no torch needed).

const HAS_NUMPY = await new Deno.Command("python3", { args: ["-c", "import numpy"] }).output()
  .then((o) => o.success, () => false);

const FAKE_TORCH = `
import sys, types, pickle, zipfile, collections, json, numpy as np
torch = types.ModuleType("torch"); utils = types.ModuleType("torch._utils")
nnp = types.ModuleType("torch.nn.parameter")
sys.modules.update({"torch": torch, "torch._utils": utils, "torch.nn.parameter": nnp})
DT = {"FloatStorage": np.float32, "HalfStorage": np.float16, "LongStorage": np.int64,
      "IntStorage": np.int32, "DoubleStorage": np.float64, "ByteStorage": np.uint8,
      "BoolStorage": np.bool_, "BFloat16Storage": np.uint16}
for n in DT:
    c = type(n, (), {}); c.__module__ = "torch"; setattr(torch, n, c)
def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks, *rest):
    arr, = storage
    it = arr.itemsize
    return np.lib.stride_tricks.as_strided(arr[offset:], shape=size, strides=[s * it for s in stride]).copy()
def _rebuild_parameter(data, requires_grad, hooks):
    return data
_rebuild_tensor_v2.__module__ = "torch._utils"; _rebuild_parameter.__module__ = "torch._utils"
utils._rebuild_tensor_v2 = _rebuild_tensor_v2; utils._rebuild_parameter = _rebuild_parameter
`;

Deno.test({
  name: "torch .bin: python-made checkpoint (pickle protocol 2 + zipfile) reads correctly",
  ignore: !HAS_NUMPY,
}, async () => {
  const dir = await tmpDir();
  try {
    const path = join(dir, "py.bin");
    const script = FAKE_TORCH + `
class Storage:
    def __init__(self, key, cls, arr): self.key, self.cls, self.arr = key, cls, arr
class T:
    def __init__(self, st, off, size, stride): self.a = (st, off, size, stride)
    def __reduce_ex__(self, proto):
        st, off, size, stride = self.a
        return (_rebuild_tensor_v2, (st, off, tuple(size), tuple(stride), False, collections.OrderedDict()))
class P:
    def __init__(self, t): self.t = t
    def __reduce_ex__(self, proto): return (_rebuild_parameter, (self.t, True, collections.OrderedDict()))
class Pk(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage): return ("storage", obj.cls, obj.key, "cpu", obj.arr.size)
        return None
s0 = Storage("0", torch.FloatStorage, np.arange(12, dtype=np.float32))
s1 = Storage("1", torch.HalfStorage, np.array([1, -2, 0.5], dtype=np.float16))
s2 = Storage("2", torch.LongStorage, np.array([5, -6], dtype=np.int64))
sd = collections.OrderedDict()
sd["emb"] = T(s0, 0, [3, 4], [4, 1])
sd["head"] = T(s0, 0, [3, 4], [4, 1])
sd["tail"] = T(s0, 8, [2, 2], [2, 1])
sd["tr"] = T(s0, 0, [4, 3], [1, 4])
sd["p"] = P(T(s1, 0, [3], [1]))
sd["ids"] = T(s2, 0, [2], [1])
sd._metadata = collections.OrderedDict([("", {"version": 1}), ("emb", {"version": 2})])
import io
buf = io.BytesIO(); Pk(buf, protocol=2).dump(sd)
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_STORED) as z:
    z.writestr("py/data.pkl", buf.getvalue())
    z.writestr("py/byteorder", "little")
    for s in (s0, s1, s2): z.writestr("py/data/" + s.key, s.arr.tobytes())
    z.writestr("py/version", "3\\n")
`;
    const out = await new Deno.Command("python3", { args: ["-c", script, path] }).output();
    assert.ok(out.success, new TextDecoder().decode(out.stderr));
    const r = await openTensors(path);
    const ar = [...Array(12).keys()];
    assert.deepEqual(r.keys(), ["emb", "head", "tail", "tr", "p", "ids"]);
    assert.deepEqual([...await r.readF32("emb")], ar);
    assert.deepEqual([...await r.readF32("head")], ar);
    assert.deepEqual([...await r.readF32("tail")], [8, 9, 10, 11]);
    assert.deepEqual([...await r.readF32("tr")], [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]);
    assert.deepEqual(r.info("p"), { dtype: "F16", shape: [3] });
    assert.deepEqual([...await r.readF32("p")], [1, -2, 0.5]);
    assert.deepEqual([...await r.readF32("ids")], [5, -6]);
    r.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "torch .bin: python's zipfile and a restricted pickle loader accept what we write",
  ignore: !HAS_NUMPY,
}, async () => {
  const dir = await tmpDir();
  try {
    for (const force of [false, true]) {
      const path = join(dir, `w${force}.bin`);
      const emb = new Float32Array([1, 2, 3, 4, 5, 6]);
      await writeTorchBin(path, [
        { name: "emb", dtype: "F32", shape: [2, 3], data: emb },
        { name: "head", dtype: "F32", shape: [2, 3], data: emb },
        { name: "h", dtype: "F16", shape: [2], data: new Uint16Array([0x3c00, 0xc000]) },
        { name: "big", dtype: "I64", shape: [1], data: new BigInt64Array([1n << 40n]) },
      ], { forceZip64: force });
      const script = FAKE_TORCH + `
class R(pickle.Unpickler):
    ALLOWED = {("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2")} | {("torch", n) for n in DT}
    def __init__(self, f, z, p): super().__init__(f); self.z, self.p, self.cache = z, p, {}
    def find_class(self, m, n):
        if (m, n) not in self.ALLOWED: raise pickle.UnpicklingError(m + "." + n)
        return super().find_class(m, n)
    def persistent_load(self, pid):
        kind, cls, key, loc, numel = pid
        assert kind == "storage" and loc == "cpu"
        if key not in self.cache:
            arr = np.frombuffer(self.z.read(self.p + "/data/" + key), dtype=DT[cls.__name__])
            assert arr.size == numel
            self.cache[key] = arr
        return (self.cache[key],)
with zipfile.ZipFile(sys.argv[1]) as z:
    assert z.testzip() is None
    names = z.namelist(); p = names[0].split("/")[0]
    assert z.read(p + "/version") == b"3\\n" and z.read(p + "/byteorder") == b"little"
    raw = open(sys.argv[1], "rb").read()
    for info in z.infolist():
        o = info.header_offset
        n, e = int.from_bytes(raw[o+26:o+28], "little"), int.from_bytes(raw[o+28:o+30], "little")
        assert (o + 30 + n + e) % 64 == 0, info.filename
    import io
    sd = R(io.BytesIO(z.read(p + "/data.pkl")), z, p).load()
    assert type(sd) is collections.OrderedDict
    print(json.dumps({k: [str(v.dtype), list(v.shape), v.ravel().tolist()] for k, v in sd.items()}))
`;
      const out = await new Deno.Command("python3", { args: ["-c", script, path] }).output();
      assert.ok(out.success, new TextDecoder().decode(out.stderr));
      assert.deepEqual(JSON.parse(new TextDecoder().decode(out.stdout)), {
        emb: ["float32", [2, 3], [1, 2, 3, 4, 5, 6]],
        head: ["float32", [2, 3], [1, 2, 3, 4, 5, 6]],
        h: ["float16", [2], [1, -2]],
        big: ["int64", [1], [2 ** 40]],
      });
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
