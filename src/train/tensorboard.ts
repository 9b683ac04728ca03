// A TensorBoard event-file writer for scalars (and a reader, for tests and tools).
//
// File: `events.out.tfevents.{unix seconds}.{host}` — a TFRecord stream. Each record is
//   u64 LE length | u32 LE masked_crc32c(length bytes) | data | u32 LE masked_crc32c(data)
// with masked_crc(x) = ((crc >>> 15) | (crc << 17)) + 0xa282ead8 (mod 2³²), CRC-32C
// (Castagnoli, reflected polynomial 0x82f63b78). Each data block is a serialized `Event` proto:
//   Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
//   Summary { repeated Value value = 1; }
//   Value   { string tag = 1; float simple_value = 2; }
// The first record carries file_version "brain.Event:2"; every scalar is one Event with one Value.

import { join } from "node:path";

// ---- CRC-32C ----

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
})();

/** CRC-32C of `bytes`. */
export function crc32c(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** The TFRecord masked CRC. */
export function maskedCrc32c(bytes: Uint8Array): number {
  const c = crc32c(bytes);
  return ((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) >>> 0;
}

// ---- protobuf encoding (the few wire types needed) ----

class ProtoWriter {
  #parts: number[] = [];
  varint(v: number | bigint): this {
    let x = BigInt.asUintN(64, BigInt(v));
    while (x >= 0x80n) {
      this.#parts.push(Number(x & 0x7fn) | 0x80);
      x >>= 7n;
    }
    this.#parts.push(Number(x));
    return this;
  }
  key(field: number, wire: number): this {
    return this.varint((field << 3) | wire);
  }
  double(field: number, v: number): this {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setFloat64(0, v, true);
    this.key(field, 1);
    for (const x of b) this.#parts.push(x);
    return this;
  }
  float(field: number, v: number): this {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, v, true);
    this.key(field, 5);
    for (const x of b) this.#parts.push(x);
    return this;
  }
  int64(field: number, v: number): this {
    return this.key(field, 0).varint(v);
  }
  bytes(field: number, b: Uint8Array): this {
    this.key(field, 2).varint(b.length);
    for (const x of b) this.#parts.push(x);
    return this;
  }
  string(field: number, s: string): this {
    return this.bytes(field, new TextEncoder().encode(s));
  }
  finish(): Uint8Array {
    return Uint8Array.from(this.#parts);
  }
}

/** Serialize one Event proto. */
export function encodeEvent(
  e: { wallTime: number; step: number; fileVersion?: string; scalars?: [string, number][] },
): Uint8Array {
  const w = new ProtoWriter().double(1, e.wallTime).int64(2, e.step);
  if (e.fileVersion !== undefined) w.string(3, e.fileVersion);
  if (e.scalars && e.scalars.length) {
    const summary = new ProtoWriter();
    for (const [tag, v] of e.scalars) {
      summary.bytes(1, new ProtoWriter().string(1, tag).float(2, v).finish());
    }
    w.bytes(5, summary.finish());
  }
  return w.finish();
}

/** Frame one record (length, masked CRCs). */
export function frameRecord(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(8 + 4 + data.length + 4);
  const dv = new DataView(out.buffer);
  dv.setBigUint64(0, BigInt(data.length), true);
  dv.setUint32(8, maskedCrc32c(out.subarray(0, 8)), true);
  out.set(data, 12);
  dv.setUint32(12 + data.length, maskedCrc32c(data), true);
  return out;
}

// ---- decoding (tests, tools) ----

/** A decoded Event: wall time, step, file version and scalar values. */
export interface DecodedEvent {
  wallTime: number;
  step: number;
  fileVersion?: string;
  scalars: [string, number][];
}

class ProtoReader {
  pos = 0;
  constructor(readonly b: Uint8Array) {}
  get done(): boolean {
    return this.pos >= this.b.length;
  }
  varint(): bigint {
    let x = 0n, shift = 0n;
    for (;;) {
      if (this.pos >= this.b.length) throw new Error("protobuf: truncated varint");
      const c = this.b[this.pos++];
      x |= BigInt(c & 0x7f) << shift;
      if (!(c & 0x80)) return x;
      shift += 7n;
    }
  }
  take(n: number): Uint8Array {
    if (this.pos + n > this.b.length) throw new Error("protobuf: truncated field");
    const s = this.b.subarray(this.pos, this.pos + n);
    this.pos += n;
    return s;
  }
  /** Read one field: [field number, wire type, value]. */
  field(): [number, number, bigint | Uint8Array] {
    const k = Number(this.varint());
    const f = k >>> 3, wire = k & 7;
    switch (wire) {
      case 0:
        return [f, wire, this.varint()];
      case 1:
        return [f, wire, this.take(8)];
      case 2:
        return [f, wire, this.take(Number(this.varint()))];
      case 5:
        return [f, wire, this.take(4)];
      default:
        throw new Error(`protobuf: unsupported wire type ${wire}`);
    }
  }
}

function le(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

/** Decode one Event proto (only the fields this writer produces). */
export function decodeEvent(data: Uint8Array): DecodedEvent {
  const r = new ProtoReader(data);
  const ev: DecodedEvent = { wallTime: 0, step: 0, scalars: [] };
  while (!r.done) {
    const [f, , v] = r.field();
    if (f === 1) ev.wallTime = le(v as Uint8Array).getFloat64(0, true);
    else if (f === 2) ev.step = Number(BigInt.asIntN(64, v as bigint));
    else if (f === 3) ev.fileVersion = new TextDecoder().decode(v as Uint8Array);
    else if (f === 5) {
      const s = new ProtoReader(v as Uint8Array);
      while (!s.done) {
        const [sf, , sv] = s.field();
        if (sf !== 1) continue;
        const val = new ProtoReader(sv as Uint8Array);
        let tag = "", x = NaN;
        while (!val.done) {
          const [vf, , vv] = val.field();
          if (vf === 1) tag = new TextDecoder().decode(vv as Uint8Array);
          else if (vf === 2) x = le(vv as Uint8Array).getFloat32(0, true);
        }
        ev.scalars.push([tag, x]);
      }
    }
  }
  return ev;
}

/** Split a TFRecord stream into records, verifying both CRCs of each. */
export function readRecords(bytes: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  let p = 0;
  while (p < bytes.length) {
    if (p + 12 > bytes.length) throw new Error(`TFRecord: truncated header at byte ${p}`);
    const dv = le(bytes.subarray(p));
    const n = Number(dv.getBigUint64(0, true));
    if (dv.getUint32(8, true) !== maskedCrc32c(bytes.subarray(p, p + 8))) {
      throw new Error(`TFRecord: bad length CRC at byte ${p}`);
    }
    if (p + 16 + n > bytes.length) throw new Error(`TFRecord: truncated record at byte ${p}`);
    const data = bytes.subarray(p + 12, p + 12 + n);
    if (le(bytes.subarray(p + 12 + n)).getUint32(0, true) !== maskedCrc32c(data)) {
      throw new Error(`TFRecord: bad data CRC at byte ${p}`);
    }
    out.push(data);
    p += 16 + n;
  }
  return out;
}

// ---- the writer ----

/** Appends scalar events to one event file (synchronously, so a crash loses nothing written). */
export class TensorBoardWriter {
  readonly path: string;
  #file: Deno.FsFile;

  private constructor(path: string, file: Deno.FsFile) {
    this.path = path;
    this.#file = file;
  }

  /** Create `logDir` if needed and open a new event file in it. */
  static open(logDir: string, now = Date.now()): TensorBoardWriter {
    Deno.mkdirSync(logDir, { recursive: true });
    let host = "localhost";
    try {
      host = Deno.hostname().replace(/[^A-Za-z0-9._-]/g, "_") || host;
    } catch { /* hostname needs --allow-sys; keep the default */ }
    const path = join(logDir, `events.out.tfevents.${Math.floor(now / 1000)}.${host}`);
    const file = Deno.openSync(path, { write: true, create: true, append: true });
    const w = new TensorBoardWriter(path, file);
    w.#write(encodeEvent({ wallTime: now / 1000, step: 0, fileVersion: "brain.Event:2" }));
    return w;
  }

  #write(data: Uint8Array): void {
    const rec = frameRecord(data);
    let off = 0;
    while (off < rec.length) off += this.#file.writeSync(rec.subarray(off));
  }

  /** One scalar per tag at `step` (non-finite values are written as they are: TB shows NaN). */
  scalars(step: number, values: Record<string, number>, wallTimeMs = Date.now()): void {
    const entries = Object.entries(values).filter(([, v]) => typeof v === "number");
    if (!entries.length) return;
    this.#write(encodeEvent({ wallTime: wallTimeMs / 1000, step, scalars: entries }));
  }

  close(): void {
    try {
      this.#file.close();
    } catch { /* already closed */ }
  }
}
