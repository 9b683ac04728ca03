// The one interface through which model loading reads files, so the same loader runs on Deno
// files and in a browser over HTTP:
//
//   ByteSource   one file read by byte ranges (a safetensors reader seeks header and tensors)
//   ModelFolder  a checkpoint folder: optional text files (configs, tokenizer) + byte sources
//
// localFolder (Deno files, bounded reads) is in source_local.ts; httpFolder (fetch with HTTP
// Range requests, optional Cache API storage) is in source_http.ts.

import type { ReadKind } from "./file.ts";

/** One file, read by byte ranges. `RandomAccessFile` (file.ts) is one. */
export interface ByteSource {
  /** File path or URL (for messages). */
  readonly path: string;
  /** Size in bytes. */
  readonly size: number;
  /** `length` bytes at `position`; rejects when the range is outside the file. */
  read(position: number, length: number): Promise<Uint8Array>;
  /** Release the handle. */
  close(): void;
}

/** A checkpoint folder: configs, tokenizer, weights. */
export interface ModelFolder {
  /** Folder path or URL (for messages). */
  readonly path: string;
  /** Path or URL of `name` inside the folder (for messages). */
  where(name: string): string;
  /** The text of `name`, or undefined when there is no such file; `kind` bounds its size. */
  text(name: string, kind: ReadKind): Promise<string | undefined>;
  /** Whether `name` exists. */
  has(name: string): Promise<boolean>;
  /** Open `name` for ranged reads; throws naming the file when it is missing. */
  open(name: string): Promise<ByteSource>;
}

/** Whether a model argument is a folder object rather than a path string. */
export function isModelFolder(x: unknown): x is ModelFolder {
  return typeof x === "object" && x !== null && "open" in x && "text" in x && "where" in x;
}

/** {@link ModelFolder.text} for a file that must exist. */
export async function requireText(
  folder: ModelFolder,
  name: string,
  kind: ReadKind,
): Promise<string> {
  const text = await folder.text(name, kind);
  if (text === undefined) throw new Error(`missing ${folder.where(name)}`);
  return text;
}
