// Hardening of the io layer (issue 15): one bounded reader for whole-file reads (classes 1, 6),
// dataset paths kept inside their folder (1), disk-full errors naming the file (6), JSON errors
// with line and column (6), CRC-32 checked .bin entries and refused expanding views (9), and
// safetensors offsets aligned to their element size (14).

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  atomicWrite,
  readBounded,
  readJson,
  readLimit,
  resolveInside,
  setReadLimitMiB,
  writeAll,
} from "../src/io/file.ts";
import { buildStateDictPickle, TorchBinReader, writeTorchBin } from "../src/io/torch_bin.ts";
import { ZipWriter } from "../src/io/zip.ts";
import { SafetensorsReader, writeSafetensors } from "../src/io/safetensors.ts";

const tmp = () => Deno.makeTempDir({ prefix: "siqvl_harden_io_" });

Deno.test("bounded reader: directory, device and FIFO are clear errors, never a hang", async () => {
  const dir = await tmp();
  await assert.rejects(
    readBounded(dir, "image"),
    /image file .* is not a regular file \(it is a directory\)/,
  );
  await assert.rejects(
    readBounded("/dev/zero", "config"),
    /config file \/dev\/zero is not a regular file \(it is a device, FIFO or socket\)/,
  );
  const fifo = join(dir, "pipe");
  const mk = await new Deno.Command("mkfifo", { args: [fifo] }).output();
  assert.ok(mk.success, "mkfifo");
  // Opening a FIFO with no writer would block forever; the reader must refuse before opening.
  await assert.rejects(
    readBounded(fifo, "tokenizer"),
    /tokenizer file .*pipe is not a regular file/,
  );
  await assert.rejects(readBounded(join(dir, "none.json"), "config"), /missing .*none\.json/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("bounded reader: size cap per kind, raised by --max_file_mb", async () => {
  const dir = await tmp();
  const p = join(dir, "big.png");
  await Deno.writeFile(p, new Uint8Array(3000).fill(7));
  await assert.rejects(
    readBounded(p, "image", 2048),
    /image file .*big\.png is too large: 3000 bytes > limit 2048 \(raise with --max_file_mb\)/,
  );
  assert.equal((await readBounded(p, "image", 3000)).length, 3000);
  const before = readLimit("config");
  try {
    setReadLimitMiB(1 / 1024); // 1 KiB
    await assert.rejects(readBounded(p, "config"), /too large: 3000 bytes > limit 1024/);
    setReadLimitMiB(1);
    assert.equal((await readBounded(p, "config")).length, 3000);
  } finally {
    setReadLimitMiB(undefined);
  }
  assert.equal(readLimit("config"), before);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("dataset paths resolve inside the folder: absolute, .. and escaping links refused", async () => {
  const dir = await tmp();
  const root = join(dir, "data");
  await Deno.mkdir(join(root, "img"), { recursive: true });
  await Deno.writeFile(join(root, "img", "a.png"), new Uint8Array([1]));
  await Deno.writeFile(join(dir, "secret.png"), new Uint8Array([2]));
  await Deno.symlink(join(dir, "secret.png"), join(root, "img", "link.png"));
  assert.deepEqual(await resolveInside(root, "img/a.png"), { path: join(root, "img", "a.png") });
  assert.match(
    (await resolveInside(root, "/etc/passwd") as { refused: string }).refused,
    /absolute path \/etc\/passwd/,
  );
  assert.match(
    (await resolveInside(root, "img/../../secret.png") as { refused: string }).refused,
    /climbs out with \.\./,
  );
  assert.match(
    (await resolveInside(root, "img/link.png") as { refused: string }).refused,
    /leads outside/,
  );
  assert.deepEqual(await resolveInside(root, "/etc/passwd", true), { path: "/etc/passwd" });
  await Deno.remove(dir, { recursive: true });
});

Deno.test("disk full names the file being written", async () => {
  const dir = await tmp();
  const target = join(dir, "model.safetensors");
  await assert.rejects(
    atomicWrite(target, async () => {
      const full = await Deno.open("/dev/full", { write: true });
      try {
        await writeAll(full, new Uint8Array(4096));
      } finally {
        full.close();
      }
    }),
    /disk full while writing .*model\.safetensors/,
  );
  assert.deepEqual([...Deno.readDirSync(dir)], [], "no temporary file left behind");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("JSON errors name the file with line and column", async () => {
  const dir = await tmp();
  const p = join(dir, "config.json");
  await Deno.writeTextFile(p, '{\n  "a": 1,\n  "b": oops\n}\n');
  await assert.rejects(readJson(p), /config\.json:3:8: invalid JSON/);
  await Deno.remove(dir, { recursive: true });
});

// ------------------------------------------------------------------------------- .bin (9)

async function writeRawBin(path: string, pkl: Uint8Array, storage: Uint8Array): Promise<void> {
  const f = await Deno.open(path, { write: true, create: true, truncate: true });
  try {
    const z = new ZipWriter(f, { align: 64 });
    await z.add("archive/data.pkl", pkl);
    await z.add("archive/byteorder", new TextEncoder().encode("little"));
    await z.add("archive/data/0", storage);
    await z.finish();
  } finally {
    f.close();
  }
}

Deno.test(".bin: a flipped byte in a storage record fails its CRC-32, naming the entry", async () => {
  const dir = await tmp();
  const p = join(dir, "pytorch_model.bin");
  const w = new Float32Array(64).map((_, i) => 0.25 * i - 3);
  await writeTorchBin(p, {
    w: { dtype: "F32", shape: [8, 8], data: w },
    b: { dtype: "F32", shape: [8], data: new Float32Array(8).fill(0.5) },
  });
  const good = await TorchBinReader.open(p);
  assert.deepEqual([...await good.readF32("w")], [...w]);
  good.close();
  const bytes = await Deno.readFile(p);
  // Find w's bytes and flip one bit in the middle of them.
  const needle = new Uint8Array(w.buffer);
  let at = -1;
  for (let i = 0; i + needle.length <= bytes.length && at < 0; i++) {
    if (needle.every((v, j) => bytes[i + j] === v)) at = i;
  }
  assert.ok(at > 0);
  bytes[at + 100] ^= 0x10;
  await Deno.writeFile(p, bytes);
  const r = await TorchBinReader.open(p);
  await assert.rejects(
    r.read("w"),
    /corrupt zip entry "archive\/data\/0" in .*pytorch_model\.bin: CRC-32 [0-9a-f]{8} does not match/,
  );
  assert.equal((await r.readF32("b"))[0], 0.5, "other entries still read");
  r.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test(".bin: a partial (strided) read checks the CRC of its whole record too", async () => {
  const dir = await tmp();
  const p = join(dir, "view.bin");
  const data = new Float32Array([1, 2, 3, 4, 5, 6]);
  const pkl = buildStateDictPickle([
    { name: "t", dtype: "F32", shape: [3, 2], key: "0", stride: [1, 3], numel: 6 },
  ]);
  const raw = new Uint8Array(data.buffer.slice(0));
  await writeRawBin(p, pkl, raw);
  const ok = await TorchBinReader.open(p);
  assert.deepEqual([...await ok.readF32("t")], [1, 4, 2, 5, 3, 6]);
  ok.close();
  const bytes = await Deno.readFile(p);
  const at = bytes.findIndex((_, i) => raw.every((v, j) => bytes[i + j] === v));
  bytes[at + 1] ^= 1;
  await Deno.writeFile(p, bytes);
  const bad = await TorchBinReader.open(p);
  await assert.rejects(bad.read("t"), /CRC-32/);
  bad.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test(".bin: a view that would materialise far more than its storage is refused at open", async () => {
  const dir = await tmp();
  const p = join(dir, "bomb.bin");
  // 4 stored bytes viewed as 2^28 floats (1 GiB) through a zero stride.
  const pkl = buildStateDictPickle([
    { name: "bomb", dtype: "F32", shape: [1 << 14, 1 << 14], key: "0", stride: [0, 0], numel: 1 },
  ]);
  await writeRawBin(p, pkl, new Uint8Array(4));
  await assert.rejects(
    TorchBinReader.open(p),
    /tensor "bomb" .* would materialise 1073741824 bytes from a storage of 4 bytes/,
  );
  // A small broadcast view (legal in torch) still reads.
  const q = join(dir, "small.bin");
  await writeRawBin(
    q,
    buildStateDictPickle([
      { name: "row", dtype: "F32", shape: [4, 2], key: "0", stride: [0, 1], numel: 2 },
    ]),
    new Uint8Array(new Float32Array([7, 8]).buffer),
  );
  const r = await TorchBinReader.open(q);
  assert.deepEqual([...await r.readF32("row")], [7, 8, 7, 8, 7, 8, 7, 8]);
  r.close();
  await Deno.remove(dir, { recursive: true });
});

// ------------------------------------------------------------------------- safetensors (14)

Deno.test("safetensors writer: every offset is a multiple of its element size", async () => {
  const dir = await tmp();
  const p = join(dir, "mixed.safetensors");
  // Given order would put an F32 at byte 3 and an I64 at byte 13.
  const tensors = {
    mask: { dtype: "U8" as const, shape: [3], data: new Uint8Array([1, 0, 1]) },
    w: { dtype: "F32" as const, shape: [2], data: new Float32Array([1.5, -2]) },
    h: { dtype: "BF16" as const, shape: [1], data: new Uint8Array([0x80, 0x3f]) },
    ids: { dtype: "I64" as const, shape: [2], data: new BigInt64Array([5n, -6n]) },
    flag: { dtype: "BOOL" as const, shape: [1], data: new Uint8Array([1]) },
  };
  await writeSafetensors(p, tensors);
  const r = await SafetensorsReader.open(p);
  const size = { U8: 1, BOOL: 1, BF16: 2, F32: 4, I64: 8 } as Record<string, number>;
  for (const name of r.keys()) {
    const { offset } = r.span(name);
    assert.equal(offset % size[r.info(name).dtype], 0, `${name} at ${offset}`);
  }
  assert.deepEqual(r.keys(), ["ids", "w", "h", "mask", "flag"]);
  assert.deepEqual([...await r.readF32("w")], [1.5, -2]);
  assert.deepEqual([...await r.read("mask")], [1, 0, 1]);
  r.close();
  await Deno.remove(dir, { recursive: true });
});
