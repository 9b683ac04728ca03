// A ModelFolder on the local file system (Deno): text through the bounded reader, weights
// through RandomAccessFile.

import { join } from "node:path";
import { exists, RandomAccessFile, readOptionalText } from "./file.ts";
import type { ModelFolder } from "./source.ts";

/** The folder `dir` on disk. */
export function localFolder(dir: string): ModelFolder {
  return {
    path: dir,
    where: (name) => join(dir, name),
    text: (name, kind) => readOptionalText(join(dir, name), kind),
    has: (name) => exists(join(dir, name)),
    open: (name) => RandomAccessFile.open(join(dir, name)),
  };
}

/** A folder object as is, or the local folder of a path. */
export function asFolder(dir: string | ModelFolder): ModelFolder {
  return typeof dir === "string" ? localFolder(dir) : dir;
}
