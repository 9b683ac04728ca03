// A ModelFolder over files the visitor picked (an <input type="file" webkitdirectory> folder):
// read in the page, nothing uploaded. Either a checkpoint folder itself, or a Hugging Face hub
// cache folder (`models--org--name` with refs/ and snapshots/<revision>/), whose revision is the
// one refs/main names (else the only snapshot).

import { readLimit } from "../io/file.ts";
import type { ModelFolder } from "../io/source.ts";
import { blobSource } from "../io/source_http.ts";

/** A picked file and its path inside the picked folder (webkitRelativePath). */
export interface PickedFile {
  file: Blob;
  path: string;
}

/** The picked files as a checkpoint folder. */
export async function filesFolder(files: Iterable<PickedFile>): Promise<ModelFolder> {
  const all = [...files].map((f) => ({ ...f, parts: f.path.split("/").filter(Boolean) }));
  if (all.length === 0) throw new Error("no files were picked");
  const top = all[0].parts.length > 1 ? all[0].parts[0] : "";
  const rel = (p: string[]) => (top && p[0] === top ? p.slice(1) : p);
  let label = top || "picked files";
  const byName = new Map<string, Blob>();
  const revisions = new Set(
    all.map((f) => rel(f.parts)).filter((p) => p[0] === "snapshots" && p.length > 2).map((p) =>
      p[1]
    ),
  );
  if (revisions.size > 0) {
    const ref = all.find((f) => rel(f.parts).join("/") === "refs/main");
    const named = ref ? (await ref.file.text()).trim() : undefined;
    const rev = named && revisions.has(named)
      ? named
      : revisions.size === 1
      ? [...revisions][0]
      : undefined;
    if (!rev) {
      throw new Error(
        `${label}: a hub cache folder with ${revisions.size} snapshots and no refs/main naming ` +
          "one of them; pick the snapshots/<revision> folder itself",
      );
    }
    for (const f of all) {
      const p = rel(f.parts);
      if (p[0] === "snapshots" && p[1] === rev) byName.set(p.slice(2).join("/"), f.file);
    }
    label = `${label}@${rev.slice(0, 12)}`;
  } else {
    for (const f of all) byName.set(rel(f.parts).join("/"), f.file);
  }
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
