// Positioned reads from an open file (seek + read, serialised so that concurrent reads of one
// handle never interleave) and atomic writes (temp file in the same directory + rename).

import { basename, dirname, join } from "node:path";

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
  } finally {
    file.close();
    if (!ok) await Deno.remove(tmp).catch(() => {});
  }
  try {
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
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

/** Read and parse a JSON file; a missing file or bad JSON is an error naming the path. */
export async function readJson<T = Record<string, unknown>>(path: string): Promise<T> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new Error(`missing ${path}`);
    throw e;
  }
  try {
    return JSON.parse(text) as T;
  } catch (e) {
    throw new Error(`${path}: invalid JSON (${(e as Error).message})`);
  }
}
