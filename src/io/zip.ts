// Minimal ZIP support for PyTorch checkpoints: a central-directory reader for STORED
// (uncompressed) entries, zip64 included, and a streaming writer that aligns each record's data
// to 64 bytes the way torch.save does (padding the local header's extra field).
//
// Offsets and sizes are taken from the central directory; the data start of an entry is
// computed from its local header (30 + name length + extra length), because local headers may
// carry different extra fields than the central directory.

import { crc32 as zlibCrc32 } from "node:zlib";
import { RandomAccessFile, writeAll } from "./file.ts";

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;
const U32_MAX = 0xffffffff;
const U16_MAX = 0xffff;

/** One stored entry of an archive. */
export interface ZipEntry {
  /** Full entry name, e.g. "archive/data/0". */
  name: string;
  /** Absolute file offset of the first data byte. */
  dataOffset: number;
  /** Size in bytes (stored = uncompressed). */
  size: number;
  /** CRC-32 from the central directory. */
  crc32: number;
}

/** Reads a ZIP archive's directory up front and its entries' bytes on demand. */
export class ZipReader {
  /** Archive path (for messages). */
  readonly path: string;
  /** Entries in central-directory order. */
  readonly entries: ZipEntry[];
  #byName: Map<string, ZipEntry>;
  #file: RandomAccessFile;
  /** Entries whose bytes matched their CRC-32 (each is checked once, on first read). */
  #verified = new Set<string>();

  private constructor(file: RandomAccessFile, entries: ZipEntry[]) {
    this.path = file.path;
    this.#file = file;
    this.entries = entries;
    this.#byName = new Map(entries.map((e) => [e.name, e]));
  }

  /** Open `path` and validate its central directory and every local header. */
  static async open(path: string): Promise<ZipReader> {
    const file = await RandomAccessFile.open(path);
    try {
      return new ZipReader(file, await readDirectory(file));
    } catch (e) {
      file.close();
      throw e;
    }
  }

  /** Wrap an already open file (the caller keeps ownership until {@link close}). */
  static async fromFile(file: RandomAccessFile): Promise<ZipReader> {
    return new ZipReader(file, await readDirectory(file));
  }

  /** The entry called `name`, or undefined. */
  get(name: string): ZipEntry | undefined {
    return this.#byName.get(name);
  }

  /** Read `length` bytes of entry `name` starting `start` bytes into it. */
  readRange(name: string, start: number, length: number): Promise<Uint8Array> {
    const e = this.#byName.get(name);
    if (!e) return Promise.reject(new Error(`no entry "${name}" in ${this.path}`));
    if (start < 0 || length < 0 || start + length > e.size) {
      return Promise.reject(
        new Error(
          `read of ${length} bytes at ${start} is outside entry "${name}" (${e.size} bytes) in ` +
            this.path,
        ),
      );
    }
    if (start === 0 && length === e.size) return this.read(name);
    return this.verify(e).then(() => this.#file.read(e.dataOffset + start, length));
  }

  /** Read a whole entry, checking its CRC-32. */
  async read(name: string): Promise<Uint8Array> {
    const e = this.#byName.get(name);
    if (!e) throw new Error(`no entry "${name}" in ${this.path}`);
    const bytes = await this.#file.read(e.dataOffset, e.size);
    this.#checkCrc(e, crc32(bytes));
    return bytes;
  }

  /**
   * Check an entry's CRC-32 against the central directory without keeping its bytes (read in
   * bounded chunks). Done once per entry; partial reads call it first.
   */
  async verify(e: ZipEntry): Promise<void> {
    if (this.#verified.has(e.name)) return;
    const CHUNK = 1 << 24;
    let crc = 0;
    for (let at = 0; at < e.size; at += CHUNK) {
      crc = crc32(await this.#file.read(e.dataOffset + at, Math.min(CHUNK, e.size - at)), crc);
    }
    this.#checkCrc(e, crc);
  }

  #checkCrc(e: ZipEntry, crc: number): void {
    if (crc !== e.crc32) {
      const hex = (v: number) => v.toString(16).padStart(8, "0");
      throw new Error(
        `corrupt zip entry "${e.name}" in ${this.path}: CRC-32 ${hex(crc)} does not match ` +
          `the stored ${hex(e.crc32)} (damaged or truncated file)`,
      );
    }
    this.#verified.add(e.name);
  }

  /** Close the file handle. */
  close(): void {
    this.#file.close();
  }
}

async function readDirectory(file: RandomAccessFile): Promise<ZipEntry[]> {
  const path = file.path;
  const bad = (msg: string) => new Error(`invalid zip archive ${path}: ${msg}`);
  // End of central directory: 22 bytes + up to 65535 bytes of comment, at the end of the file.
  const tailLen = Math.min(file.size, 22 + U16_MAX);
  if (tailLen < 22) throw bad(`file is too short (${file.size} bytes)`);
  const tailStart = file.size - tailLen;
  const tail = await file.read(tailStart, tailLen);
  const tv = new DataView(tail.buffer);
  let eocd = -1;
  for (let i = tailLen - 22; i >= 0; i--) {
    if (tv.getUint32(i, true) === SIG_EOCD && i + 22 + tv.getUint16(i + 20, true) <= tailLen) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw bad("no end-of-central-directory record");
  const disk = tv.getUint16(eocd + 4, true);
  const cdDisk = tv.getUint16(eocd + 6, true);
  let count: number = tv.getUint16(eocd + 10, true);
  let cdSize: number = tv.getUint32(eocd + 12, true);
  let cdOffset: number = tv.getUint32(eocd + 16, true);
  const needs64 = count === U16_MAX || cdSize === U32_MAX || cdOffset === U32_MAX;
  const locAt = tailStart + eocd - 20;
  if (locAt >= 0) {
    const loc = await file.read(locAt, 20);
    const lv = new DataView(loc.buffer);
    if (lv.getUint32(0, true) === SIG_ZIP64_LOCATOR) {
      const recOff = safeU64(lv, 8, () => bad("zip64 locator offset too large"));
      if (recOff + 56 > file.size) throw bad("zip64 end record is outside the file");
      const rec = await file.read(recOff, 56);
      const rv = new DataView(rec.buffer);
      if (rv.getUint32(0, true) !== SIG_ZIP64_EOCD) throw bad("bad zip64 end record signature");
      const tooBig = () => bad("zip64 size field too large");
      count = safeU64(rv, 32, tooBig);
      cdSize = safeU64(rv, 40, tooBig);
      cdOffset = safeU64(rv, 48, tooBig);
    } else if (needs64) {
      throw bad("zip64 values used but no zip64 locator found");
    }
  } else if (needs64) {
    throw bad("zip64 values used but no zip64 locator found");
  }
  if (disk !== 0 || cdDisk !== 0) throw bad("multi-disk archives are not supported");
  if (cdOffset + cdSize > file.size) {
    throw bad(`central directory (${cdSize} bytes at ${cdOffset}) is outside the file`);
  }
  if (count * 46 > cdSize) throw bad(`${count} entries cannot fit in ${cdSize} directory bytes`);
  const cd = await file.read(cdOffset, cdSize);
  const cv = new DataView(cd.buffer);
  const decoder = new TextDecoder("utf-8", { fatal: false });
  const entries: ZipEntry[] = [];
  const names = new Set<string>();
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + 46 > cdSize || cv.getUint32(p, true) !== SIG_CENTRAL) {
      throw bad(`bad central directory header #${i}`);
    }
    const flags = cv.getUint16(p + 8, true);
    const method = cv.getUint16(p + 10, true);
    const crc = cv.getUint32(p + 16, true);
    let csize: number = cv.getUint32(p + 20, true);
    let usize: number = cv.getUint32(p + 24, true);
    const nameLen = cv.getUint16(p + 28, true);
    const extraLen = cv.getUint16(p + 30, true);
    const commentLen = cv.getUint16(p + 32, true);
    let localOff: number = cv.getUint32(p + 42, true);
    if (p + 46 + nameLen + extraLen + commentLen > cdSize) {
      throw bad(`central directory header #${i} runs past the directory`);
    }
    const name = decoder.decode(cd.subarray(p + 46, p + 46 + nameLen));
    // zip64 extended information: present fields follow the order usize, csize, offset.
    let x = p + 46 + nameLen;
    const xEnd = x + extraLen;
    while (x + 4 <= xEnd) {
      const id = cv.getUint16(x, true);
      const len = cv.getUint16(x + 2, true);
      if (x + 4 + len > xEnd) throw bad(`extra field of "${name}" runs past its header`);
      if (id === 0x0001) {
        let q = x + 4;
        const next = () => {
          if (q + 8 > x + 4 + len) throw bad(`short zip64 extra field in "${name}"`);
          const v = safeU64(cv, q, () => bad(`zip64 value too large in "${name}"`));
          q += 8;
          return v;
        };
        if (usize === U32_MAX) usize = next();
        if (csize === U32_MAX) csize = next();
        if (localOff === U32_MAX) localOff = next();
      }
      x += 4 + len;
    }
    p = xEnd + commentLen;
    if (flags & 0x1) throw bad(`entry "${name}" is encrypted`);
    if (name.endsWith("/")) continue; // directory entry
    if (method !== 0) {
      throw new Error(
        `unsupported zip entry "${name}" in ${path}: compression method ${method} (only STORED ` +
          `entries, as torch.save writes, are supported)`,
      );
    }
    if (csize !== usize) throw bad(`stored entry "${name}" has csize ${csize} != size ${usize}`);
    if (names.has(name)) throw bad(`duplicate entry "${name}"`);
    names.add(name);
    entries.push({ name, dataOffset: localOff, size: usize, crc32: crc });
  }
  // Resolve data offsets from the local headers.
  for (const e of entries) {
    const localOff = e.dataOffset;
    if (localOff + 30 > cdOffset) throw bad(`local header of "${e.name}" is outside the data area`);
    const lh = await file.read(localOff, 30);
    const lv = new DataView(lh.buffer);
    if (lv.getUint32(0, true) !== SIG_LOCAL) throw bad(`bad local header for "${e.name}"`);
    const start = localOff + 30 + lv.getUint16(26, true) + lv.getUint16(28, true);
    if (start + e.size > cdOffset) {
      throw bad(`data of "${e.name}" (${e.size} bytes at ${start}) overruns the data area`);
    }
    e.dataOffset = start;
  }
  return entries;
}

function safeU64(v: DataView, at: number, err: () => Error): number {
  const big = v.getBigUint64(at, true);
  if (big > BigInt(Number.MAX_SAFE_INTEGER)) throw err();
  return Number(big);
}

// ---------------------------------------------------------------------------------------------
// CRC-32 (IEEE 802.3, as ZIP uses), native via node:zlib.

/** Update a running CRC-32 with `data` (start from 0). */
export function crc32(data: Uint8Array, crc = 0): number {
  return zlibCrc32(data, crc) >>> 0;
}

// ---------------------------------------------------------------------------------------------
// Writer.

/** Options for {@link ZipWriter}. */
export interface ZipWriterOptions {
  /** Data alignment in bytes (torch uses 64). */
  align?: number;
  /** Write zip64 records even when not needed (tests exercise the zip64 reader with it). */
  forceZip64?: boolean;
}

interface Written {
  name: Uint8Array;
  offset: number;
  size: number;
  crc: number;
}

/** Writes STORED entries sequentially to an open file; call {@link finish} at the end. */
export class ZipWriter {
  #file: Deno.FsFile;
  #pos = 0;
  #align: number;
  #force64: boolean;
  #written: Written[] = [];

  /** Write to `file` from its current position (expected: the start of an empty file). */
  constructor(file: Deno.FsFile, options: ZipWriterOptions = {}) {
    this.#file = file;
    this.#align = options.align ?? 64;
    this.#force64 = options.forceZip64 ?? false;
  }

  async #put(bytes: Uint8Array): Promise<void> {
    await writeAll(this.#file, bytes);
    this.#pos += bytes.byteLength;
  }

  /** Append an entry whose bytes are known. */
  async add(name: string, data: Uint8Array): Promise<void> {
    const nameBytes = new TextEncoder().encode(name);
    if (nameBytes.byteLength > U16_MAX) throw new Error(`zip entry name too long: ${name}`);
    const size = data.byteLength;
    const crc = crc32(data);
    const offset = this.#pos;
    const z64 = this.#force64 || size >= U32_MAX;
    const z64Len = z64 ? 20 : 0; // id, len, usize, csize
    // Pad with an "FB" extra field so that the data starts on an alignment boundary.
    const base = offset + 30 + nameBytes.byteLength + z64Len;
    let pad = (this.#align - (base % this.#align)) % this.#align;
    if (pad > 0 && pad < 4) pad += this.#align; // an extra field needs at least its 4-byte head
    const header = new Uint8Array(30 + nameBytes.byteLength + z64Len + pad);
    const v = new DataView(header.buffer);
    v.setUint32(0, SIG_LOCAL, true);
    v.setUint16(4, z64 ? 45 : 20, true); // version needed
    v.setUint16(6, 0x0800, true); // UTF-8 names
    v.setUint16(8, 0, true); // STORED
    v.setUint16(10, 0, true); // time
    v.setUint16(12, 0x21, true); // date 1980-01-01
    v.setUint32(14, crc, true);
    v.setUint32(18, z64 ? U32_MAX : size, true);
    v.setUint32(22, z64 ? U32_MAX : size, true);
    v.setUint16(26, nameBytes.byteLength, true);
    v.setUint16(28, z64Len + pad, true);
    header.set(nameBytes, 30);
    let x = 30 + nameBytes.byteLength;
    if (z64) {
      v.setUint16(x, 0x0001, true);
      v.setUint16(x + 2, 16, true);
      v.setBigUint64(x + 4, BigInt(size), true);
      v.setBigUint64(x + 12, BigInt(size), true);
      x += 20;
    }
    if (pad > 0) {
      v.setUint16(x, 0x4246, true); // "FB"
      v.setUint16(x + 2, pad - 4, true);
      header.fill(0x5a, x + 4, x + pad); // 'Z'
    }
    await this.#put(header);
    await this.#put(data);
    this.#written.push({ name: nameBytes, offset, size, crc });
  }

  /** Write the central directory (and zip64 records when needed). */
  async finish(): Promise<void> {
    const cdOffset = this.#pos;
    const parts: Uint8Array[] = [];
    for (const w of this.#written) {
      const bigSize = this.#force64 || w.size >= U32_MAX;
      const bigOff = this.#force64 || w.offset >= U32_MAX;
      const n64 = (bigSize ? 2 : 0) + (bigOff ? 1 : 0);
      const extraLen = n64 ? 4 + 8 * n64 : 0;
      const h = new Uint8Array(46 + w.name.byteLength + extraLen);
      const v = new DataView(h.buffer);
      v.setUint32(0, SIG_CENTRAL, true);
      v.setUint16(4, 45, true); // made by
      v.setUint16(6, n64 ? 45 : 20, true);
      v.setUint16(8, 0x0800, true);
      v.setUint16(10, 0, true);
      v.setUint16(12, 0, true);
      v.setUint16(14, 0x21, true);
      v.setUint32(16, w.crc, true);
      v.setUint32(20, bigSize ? U32_MAX : w.size, true);
      v.setUint32(24, bigSize ? U32_MAX : w.size, true);
      v.setUint16(28, w.name.byteLength, true);
      v.setUint16(30, extraLen, true);
      v.setUint32(42, bigOff ? U32_MAX : w.offset, true);
      h.set(w.name, 46);
      if (n64) {
        let x = 46 + w.name.byteLength;
        v.setUint16(x, 0x0001, true);
        v.setUint16(x + 2, 8 * n64, true);
        x += 4;
        if (bigSize) {
          v.setBigUint64(x, BigInt(w.size), true);
          v.setBigUint64(x + 8, BigInt(w.size), true);
          x += 16;
        }
        if (bigOff) v.setBigUint64(x, BigInt(w.offset), true);
      }
      parts.push(h);
    }
    const cdSize = parts.reduce((s, p) => s + p.byteLength, 0);
    for (const p of parts) await this.#put(p);
    const count = this.#written.length;
    const z64 = this.#force64 || count >= U16_MAX || cdOffset >= U32_MAX || cdSize >= U32_MAX;
    if (z64) {
      const recOff = this.#pos;
      const rec = new Uint8Array(56 + 20);
      const v = new DataView(rec.buffer);
      v.setUint32(0, SIG_ZIP64_EOCD, true);
      v.setBigUint64(4, 44n, true); // size of the rest of the record
      v.setUint16(12, 45, true);
      v.setUint16(14, 45, true);
      v.setBigUint64(24, BigInt(count), true);
      v.setBigUint64(32, BigInt(count), true);
      v.setBigUint64(40, BigInt(cdSize), true);
      v.setBigUint64(48, BigInt(cdOffset), true);
      v.setUint32(56, SIG_ZIP64_LOCATOR, true);
      v.setBigUint64(64, BigInt(recOff), true);
      v.setUint32(72, 1, true); // total disks
      await this.#put(rec);
    }
    const end = new Uint8Array(22);
    const v = new DataView(end.buffer);
    v.setUint32(0, SIG_EOCD, true);
    v.setUint16(8, z64 ? U16_MAX : count, true);
    v.setUint16(10, z64 ? U16_MAX : count, true);
    v.setUint32(12, z64 ? U32_MAX : cdSize, true);
    v.setUint32(16, z64 ? U32_MAX : cdOffset, true);
    await this.#put(end);
  }
}
