// Positioned reads from an open file (seek + read, serialised so that concurrent reads of one
// handle never interleave) and atomic writes (temp file in the same directory + rename).

import { basename, dirname, isAbsolute, join, relative } from "node:path";

/**
 * A read-only file handle that reads byte ranges at absolute positions. Reads are queued, so
 * callers may issue several at once. Nothing is read until asked for.
 */
export class RandomAccessFile {
  /** Path the file was opened from (for messages). */
  readonly path: string;
  /** File size in bytes at open time. */
  readonly size: number;
  #file: Deno.FsFile | undefined;
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(path: string, file: Deno.FsFile, size: number) {
    this.path = path;
    this.#file = file;
    this.size = size;
  }

  /** Open `path` for reading; throws a clear error when it is missing or not a file. */
  static async open(path: string): Promise<RandomAccessFile> {
    let st: Deno.FileInfo;
    try {
      st = await Deno.stat(path);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) throw new Error(`no such file: ${path}`);
      throw e;
    }
    if (!st.isFile) throw new Error(`not a regular file: ${path}`);
    const file = await Deno.open(path, { read: true });
    return new RandomAccessFile(path, file, st.size);
  }

  /** Read `length` bytes at `position` into a new array; throws if the file is shorter. */
  read(position: number, length: number): Promise<Uint8Array> {
    if (
      !Number.isSafeInteger(position) || !Number.isSafeInteger(length) || position < 0 ||
      length < 0 || position + length > this.size
    ) {
      return Promise.reject(
        new Error(
          `read of ${length} bytes at ${position} is outside ${this.path} (${this.size} bytes)`,
        ),
      );
    }
    const dst = new Uint8Array(length);
    return this.readInto(position, dst).then(() => dst);
  }

  /** Fill `dst` with the bytes at `position`. */
  readInto(position: number, dst: Uint8Array): Promise<void> {
    const run = this.#queue.then(() => this.#readNow(position, dst));
    this.#queue = run.catch(() => {});
    return run;
  }

  async #readNow(position: number, dst: Uint8Array): Promise<void> {
    const file = this.#file;
    if (!file) throw new Error(`file already closed: ${this.path}`);
    if (position + dst.byteLength > this.size) {
      throw new Error(
        `read of ${dst.byteLength} bytes at ${position} is outside ${this.path} (${this.size} bytes)`,
      );
    }
    await file.seek(position, Deno.SeekMode.Start);
    let done = 0;
    while (done < dst.byteLength) {
      // Bounded chunks keep each read call modest for multi-GB tensors.
      const end = Math.min(dst.byteLength, done + (1 << 28));
      const n = await file.read(dst.subarray(done, end));
      if (n === null || n === 0) {
        throw new Error(`unexpected end of file in ${this.path} at byte ${position + done}`);
      }
      done += n;
    }
  }

  /** Close the handle; later reads fail with a clear error. Safe to call twice. */
  close(): void {
    const f = this.#file;
    this.#file = undefined;
    if (f) {
      try {
        f.close();
      } catch {
        // already closed
      }
    }
  }
}

/** Write every byte of `data` to `file`. */
export async function writeAll(file: Deno.FsFile, data: Uint8Array): Promise<void> {
  let done = 0;
  while (done < data.byteLength) {
    const end = Math.min(data.byteLength, done + (1 << 28));
    done += await file.write(data.subarray(done, end));
  }
}

/**
 * Create `path` atomically: `body` writes into a temporary file beside it, which is flushed and
 * renamed over `path` only when `body` succeeds. On failure the temporary file is removed and
 * any existing `path` is left untouched.
 */
export async function atomicWrite(
  path: string,
  body: (file: Deno.FsFile) => Promise<void>,
): Promise<void> {
  const rand = crypto.getRandomValues(new Uint32Array(1))[0].toString(16);
  const tmp = join(dirname(path), `.${basename(path)}.${Deno.pid}.${rand}.tmp`);
  const file = await Deno.open(tmp, { write: true, createNew: true });
  let ok = false;
  try {
    await body(file);
    await file.syncData();
    ok = true;
  } catch (e) {
    throw describeWriteError(e, path);
  } finally {
    file.close();
    if (!ok) await Deno.remove(tmp).catch(() => {});
  }
  try {
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw describeWriteError(e, path);
  }
}

/** Write `value` as pretty JSON through {@link atomicWrite} (flushed, then renamed). */
export async function writeJson(path: string, value: unknown): Promise<void> {
  const bytes = new TextEncoder().encode(JSON.stringify(value, null, 2) + "\n");
  await atomicWrite(path, (f) => writeAll(f, bytes));
}

/**
 * An operating-system write error (disk full, quota, read-only file system, permission) as an
 * error naming the file being written; other errors are returned unchanged.
 */
export function describeWriteError(e: unknown, path: string): unknown {
  if (!(e instanceof Error)) return e;
  const msg = e.message;
  if (/no space left|os error 28|ENOSPC/i.test(msg)) {
    return new Error(`disk full while writing ${path}: ${msg}`, { cause: e });
  }
  if (/quota exceeded|os error 122|read-only file system|os error 30/i.test(msg)) {
    return new Error(`cannot write ${path}: ${msg}`, { cause: e });
  }
  if (e instanceof Deno.errors.PermissionDenied) {
    return new Error(`permission denied writing ${path}: ${msg}`, { cause: e });
  }
  return e;
}

/** Whether `path` exists (symlinks followed: a dangling link counts as missing). */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/** What is at `path`: "file", "dir", "other" (device, FIFO, socket) or null when missing. */
export function pathKind(path: string): "file" | "dir" | "other" | null {
  try {
    const st = Deno.statSync(path);
    return st.isFile ? "file" : st.isDirectory ? "dir" : "other";
  } catch {
    return null;
  }
}

/** Whether `path` is a directory (symlinks followed). */
export const isDir = (path: string): boolean => pathKind(path) === "dir";

/** Whether `path` is a regular file (symlinks followed). */
export const isFile = (path: string): boolean => pathKind(path) === "file";

/** Read and parse a JSON file; a missing file or bad JSON is an error naming the path. */
export async function readJson<T = Record<string, unknown>>(
  path: string,
  kind: ReadKind = "config",
): Promise<T> {
  return parseJsonText<T>(await readTextBounded(path, kind), path);
}

/**
 * Parse JSON text read from `path`; a syntax error names the file with line and column (from
 * the position the parser reports).
 */
export function parseJsonText<T = unknown>(text: string, path: string): T {
  try {
    return JSON.parse(text) as T;
  } catch (e) {
    const pos = jsonErrorOffset(text);
    const before = text.slice(0, pos);
    const line = before.split("\n").length;
    const col = pos - before.lastIndexOf("\n");
    throw new Error(`${path}:${line}:${col}: invalid JSON (${(e as Error).message})`);
  }
}

/**
 * Offset of the first syntax error in `text` (only called after JSON.parse failed, whose
 * messages do not always carry a position): a plain recursive-descent scan of the grammar.
 */
export function jsonErrorOffset(text: string): number {
  let i = 0;
  const ws = () => {
    while (i < text.length && " \t\n\r".includes(text[i])) i++;
  };
  const fail = () => {
    throw i;
  };
  const lit = (w: string) => (text.startsWith(w, i) ? (i += w.length) : fail());
  const str = () => {
    i++; // opening quote
    while (i < text.length && text[i] !== '"') {
      const c = text.charCodeAt(i);
      if (c < 0x20) fail();
      if (text[i] === "\\") {
        i++;
        if (text[i] === "u") {
          if (!/^[0-9a-fA-F]{4}$/.test(text.slice(i + 1, i + 5))) fail();
          i += 4;
        } else if (!'"\\/bfnrt'.includes(text[i] ?? "")) fail();
      }
      i++;
    }
    if (i >= text.length) fail();
    i++;
  };
  const value = (): void => {
    ws();
    const c = text[i];
    if (c === "{" || c === "[") {
      const close = c === "{" ? "}" : "]";
      i++;
      ws();
      if (text[i] === close) return void i++;
      for (;;) {
        if (c === "{") {
          ws();
          if (text[i] !== '"') fail();
          str();
          ws();
          if (text[i] !== ":") fail();
          i++;
        }
        value();
        ws();
        if (text[i] === ",") i++;
        else if (text[i] === close) return void i++;
        else fail();
      }
    }
    if (c === '"') return str();
    if (c === "t") return void lit("true");
    if (c === "f") return void lit("false");
    if (c === "n") return void lit("null");
    const m = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(i, i + 400));
    if (!m) fail();
    i += m![0].length;
  };
  try {
    value();
    ws();
    if (i < text.length) fail();
  } catch (at) {
    if (typeof at === "number") return at;
    throw at;
  }
  return i;
}

// ---------------------------------------------------------------------------------------------
// Bounded reads: every file read whole by path goes through readBounded.

/** What a file read whole is, which decides its size cap. */
export type ReadKind = "image" | "config" | "tokenizer" | "dataset" | "state" | "text";

const MiB = 1024 * 1024;

/** Default size caps per kind, in bytes. */
export const DEFAULT_READ_LIMITS: Readonly<Record<ReadKind, number>> = {
  image: 64 * MiB,
  config: 16 * MiB,
  tokenizer: 64 * MiB,
  dataset: 1024 * MiB,
  state: 64 * MiB,
  text: 16 * MiB,
};

/** The flag that raises the caps (CLIs parse it and call {@link setReadLimitMiB}). */
export const READ_LIMIT_FLAG = "--max_file_mb";

const limits: Record<ReadKind, number> = { ...DEFAULT_READ_LIMITS };

/**
 * Raise (or lower) the cap of every kind to at least `mib` MiB (what `--max_file_mb N` does);
 * `undefined` restores the defaults.
 */
export function setReadLimitMiB(mib: number | undefined): void {
  for (const k of Object.keys(DEFAULT_READ_LIMITS) as ReadKind[]) {
    limits[k] = mib === undefined ? DEFAULT_READ_LIMITS[k] : Math.max(1, Math.floor(mib * MiB));
  }
}

/** The current cap for `kind`, in bytes. */
export function readLimit(kind: ReadKind): number {
  return limits[kind];
}

/**
 * Read a whole file, refusing anything that is not a regular file (a directory, device, FIFO
 * or socket is an error naming the path, never a hang) and anything larger than the cap of
 * `kind`. The size is checked before reading and again while reading (a growing file stops at
 * the cap).
 */
export async function readBounded(
  path: string,
  kind: ReadKind,
  maxBytes: number = limits[kind],
): Promise<Uint8Array> {
  const st = await statRegular(path, kind);
  const tooBig = (n: number | string) =>
    new Error(
      `${kind} file ${path} is too large: ${n} bytes > limit ${maxBytes} ` +
        `(raise with ${READ_LIMIT_FLAG})`,
    );
  if (st.size > maxBytes) throw tooBig(st.size);
  const file = await Deno.open(path, { read: true });
  try {
    const again = await file.stat();
    if (!again.isFile) throw new Error(`${kind} file ${path} is not a regular file`);
    const out = new Uint8Array(Math.min(again.size, maxBytes) + 1);
    let n = 0;
    while (n < out.byteLength) {
      const r = await file.read(out.subarray(n));
      if (r === null || r === 0) break;
      n += r;
    }
    if (n > maxBytes) throw tooBig(`more than ${maxBytes}`);
    return out.subarray(0, n);
  } finally {
    file.close();
  }
}

/** {@link readBounded} decoded as UTF-8 text. */
export async function readTextBounded(
  path: string,
  kind: ReadKind,
  maxBytes?: number,
): Promise<string> {
  return new TextDecoder().decode(await readBounded(path, kind, maxBytes));
}

/** {@link readTextBounded}, or undefined when the file does not exist. */
export async function readOptionalText(
  path: string,
  kind: ReadKind,
): Promise<string | undefined> {
  try {
    return await readTextBounded(path, kind);
  } catch (e) {
    if (e instanceof MissingFileError) return undefined;
    throw e;
  }
}

/** A file that does not exist (what {@link readBounded} throws for it). */
export class MissingFileError extends Error {
  constructor(readonly path: string) {
    super(`missing ${path}`);
    this.name = "MissingFileError";
  }
}

async function statRegular(path: string, kind: ReadKind): Promise<Deno.FileInfo> {
  let st: Deno.FileInfo;
  try {
    st = await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new MissingFileError(path);
    throw new Error(`${kind} file ${path}: cannot stat (${(e as Error).message})`);
  }
  if (!st.isFile) {
    const what = st.isDirectory ? "a directory" : "a device, FIFO or socket";
    throw new Error(`${kind} file ${path} is not a regular file (it is ${what})`);
  }
  return st;
}

/** Why a dataset-relative path was refused, or the resolved path. */
export type Resolved = { path: string } | { refused: string };

/**
 * Resolve `rel` (a path stored in a dataset record) inside `root`. Absolute paths and paths
 * that climb out with `..` are refused unless `allowOutside`; a path inside the folder whose
 * real location (symlinks followed) is outside it is refused too.
 */
export async function resolveInside(
  root: string,
  rel: string,
  allowOutside = false,
): Promise<Resolved> {
  if (allowOutside) return { path: isAbsolute(rel) ? rel : join(root, rel) };
  if (isAbsolute(rel) || /^[A-Za-z]:[\\/]/.test(rel)) {
    return { refused: `absolute path ${rel}` };
  }
  const parts = rel.split(/[\\/]+/);
  if (parts.includes("..")) return { refused: `path ${rel} climbs out with ..` };
  const path = join(root, rel);
  try {
    const [realRoot, realPath] = await Promise.all([Deno.realPath(root), Deno.realPath(path)]);
    const r = relative(realRoot, realPath);
    if (r.startsWith("..") || isAbsolute(r)) {
      return { refused: `path ${rel} leads outside ${root} (to ${realPath})` };
    }
  } catch {
    // A missing file is reported by the read that follows.
  }
  return { path };
}
