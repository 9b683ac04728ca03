/// <reference lib="dom" />
// A ModelFolder over files the visitor picked (an <input type="file" webkitdirectory> folder or
// a drop): read in the page, nothing uploaded.

import { readLimit } from "../io/file.ts";
import type { ModelFolder } from "../io/source.ts";
import { blobSource } from "../io/source_http.ts";

/** The picked files as a folder; names are taken from the last path component. */
export function filesFolder(files: Iterable<File>, label = "picked folder"): ModelFolder {
  const byName = new Map<string, File>();
  for (const f of files) byName.set(f.name, f);
  const where = (name: string) => `${label}/${name}`;
  return {
    path: label,
    where,
    async text(name, kind) {
      const f = byName.get(name);
      if (!f) return undefined;
      if (f.size > readLimit(kind)) {
        throw new Error(`${kind} file ${where(name)} is too large: ${f.size} bytes`);
      }
      return await f.text();
    },
    has: (name) => Promise.resolve(byName.has(name)),
    open(name) {
      const f = byName.get(name);
      if (!f) return Promise.reject(new Error(`no such file: ${where(name)}`));
      return Promise.resolve(blobSource(where(name), f));
    },
  };
}
