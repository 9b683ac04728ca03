// The rows of an evaluation task: parquet (or JSON / JSONL) files of one split of a dataset,
// from a local folder or a hub dataset repository (through the hub cache: downloaded once,
// then read by position; offline from the cache), or the demo's generated shapes questions.
//
// Split files, lmms-lab / datasets-library layout: under `<config>/` or `data/<config>/`
// (with a config) or `data/` or the repo root (without), files named `<split>-*.parquet`,
// `<split>.parquet` (or .json / .jsonl), or every parquet file in a `<split>/` folder. A task
// can list its files explicitly instead (`dataset.files`).
//
// Rows are read one parquet row group at a time (only the task's columns), so the size of the
// split does not matter. Every column the task names is checked against the files' schema
// first: an unknown column is an error naming the task file and the field.

import { join, relative, sep } from "node:path";
import { type FileMetaData, parquetMetadataAsync, parquetReadObjects } from "../deps.ts";
import { compressors } from "../deps.ts";
import type { RgbImage } from "../data/image.ts";
import { listRepoFiles, resolveDatasetFile } from "../io/hub.ts";
import { openLocalFile, type RandomAccessFile } from "../data/datasets/remote_files.ts";
import { DEMO_CONFIG, heldOutSamples } from "../demo/demo.ts";
import { type LoadedTask, TaskError } from "./task.ts";
import { templateFields } from "./prompt.ts";

/** One row: column name → value (strings may arrive as UTF-8 bytes). */
export type Row = Record<string, unknown>;

/** A split opened for reading. */
export interface TableSource {
  /** Rows in the split (all files). */
  total: number;
  /** Top-level column names. */
  columns: string[];
  /** Where it was read from (results and messages). */
  where: string;
  /** Rows in file order, `columns` only, at most `limit`. */
  rows(columns: string[], limit?: number): AsyncGenerator<Row>;
  close(): Promise<void>;
}

/** Options of {@link openSplit}. */
export interface SplitOptions {
  /** Hub cache / endpoint / offline overrides (default: the environment). */
  hub?: { cacheDir?: string; hubUrl?: string; offline?: boolean; token?: string };
}

const DATA_EXT = /\.(parquet|jsonl?)$/;

/** The split's data files among `paths` (repo- or folder-relative, "/"-separated). */
export function splitFiles(
  paths: readonly string[],
  config: string | undefined,
  split: string,
): string[] {
  const dirs = config ? [config, `data/${config}`] : ["data", ""];
  for (const d of dirs) {
    const prefix = d ? `${d}/` : "";
    const hits = paths.filter((p) => {
      if (!p.startsWith(prefix) || !DATA_EXT.test(p)) return false;
      const rest = p.slice(prefix.length);
      const parts = rest.split("/");
      if (parts.length === 1) {
        const name = parts[0].replace(DATA_EXT, "");
        return name === split || name.startsWith(`${split}-`);
      }
      return parts.length === 2 && parts[0] === split;
    });
    if (hits.length) return hits.sort();
  }
  return [];
}

interface FileRef {
  name: string;
  open(): Promise<RandomAccessFile>;
  /** Local path (JSON files are read whole). */
  local(): Promise<string>;
}

async function walk(root: string): Promise<string[]> {
  const out: string[] = [];
  const go = async (dir: string, depth: number) => {
    for await (const e of Deno.readDir(dir)) {
      const p = join(dir, e.name);
      if (e.isDirectory && depth < 3) await go(p, depth + 1);
      else if (e.isFile) out.push(relative(root, p).split(sep).join("/"));
    }
  };
  await go(root, 0);
  return out;
}

/** The files of a split (task `dataset` or an image join), checked to exist. */
async function findFiles(
  task: LoadedTask,
  field: string,
  config: string | undefined,
  split: string,
  opts: SplitOptions,
): Promise<{ files: FileRef[]; where: string }> {
  const ds = task.spec.dataset;
  if ("generator" in ds) throw new Error("internal: generated datasets have no files");
  const explicit = ds.files && field === "dataset" ? ds.files : undefined;
  let all: string[];
  let where: string;
  let ref: (p: string) => FileRef;
  if ("hub" in ds) {
    const revision = ds.revision ?? "main";
    where = `hub dataset ${ds.hub}@${revision}`;
    const o = opts.hub ?? {};
    try {
      all = explicit ?? await listRepoFiles(ds.hub, { type: "dataset", revision, ...o });
    } catch (e) {
      throw new TaskError(task.file, "dataset.hub", `${ds.hub}: ${(e as Error).message}`);
    }
    ref = (p) => {
      const local = () => resolveDatasetFile(ds.hub, p, revision, o);
      return { name: p, local, open: async () => openLocalFile(await local()) };
    };
  } else {
    where = `folder ${ds.path}`;
    try {
      all = explicit ?? await walk(ds.path);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        throw new TaskError(task.file, "dataset.path", `${ds.path}: no such folder`);
      }
      throw e;
    }
    ref = (p) => {
      const path = join(ds.path, p);
      return { name: p, local: () => Promise.resolve(path), open: () => openLocalFile(path) };
    };
  }
  const chosen = explicit ?? splitFiles(all, config, split);
  if (!chosen.length) {
    const seen = [...new Set(all.filter((p) => DATA_EXT.test(p)))].slice(0, 12);
    throw new TaskError(
      task.file,
      `${field}.split`,
      `no files for split "${split}"${config ? ` of config "${config}"` : ""} in ${where}` +
        ` (data files there: ${seen.length ? seen.join(", ") : "none"})`,
    );
  }
  return { files: chosen.map(ref), where };
}

/** Top-level column names of a parquet schema. */
function topColumns(md: FileMetaData): string[] {
  const out: string[] = [];
  // The schema is a flattened tree: skip each top-level element's descendants.
  let i = 1;
  const skip = (at: number): number => {
    const n = md.schema[at].num_children ?? 0;
    let next = at + 1;
    for (let c = 0; c < n; c++) next = skip(next);
    return next;
  };
  while (i < md.schema.length) {
    out.push(md.schema[i].name);
    i = skip(i);
  }
  return out;
}

async function parquetSource(files: FileRef[], where: string): Promise<TableSource> {
  const handles: RandomAccessFile[] = [];
  const metas: FileMetaData[] = [];
  for (const f of files) {
    const h = await f.open();
    handles.push(h);
    try {
      metas.push(await parquetMetadataAsync(h));
    } catch (e) {
      throw new Error(`${where}: ${f.name} is not a readable parquet file: ${e}`);
    }
  }
  const columns = topColumns(metas[0]);
  for (let i = 1; i < metas.length; i++) {
    const c = topColumns(metas[i]);
    if (c.join() !== columns.join()) {
      throw new Error(
        `${where}: ${files[i].name} has columns ${c} but ${files[0].name} has ${columns}`,
      );
    }
  }
  return {
    total: metas.reduce((s, m) => s + Number(m.num_rows), 0),
    columns,
    where,
    async *rows(cols: string[], limit = Infinity) {
      let n = 0;
      for (let f = 0; f < files.length; f++) {
        let start = 0;
        for (const g of metas[f].row_groups) {
          const end = start + Number(g.num_rows);
          if (n >= limit) return;
          const rows = await parquetReadObjects({
            file: handles[f],
            metadata: metas[f],
            columns: cols,
            rowStart: start,
            rowEnd: Math.min(end, start + (limit - n)),
            compressors,
            utf8: false,
          });
          for (const r of rows) {
            if (n++ >= limit) return;
            yield r;
          }
          start = end;
        }
      }
    },
    async close() {
      for (const h of handles) await h.close?.();
    },
  };
}

async function jsonSource(files: FileRef[], where: string): Promise<TableSource> {
  const rows: Row[] = [];
  for (const f of files) {
    const path = await f.local();
    const text = await Deno.readTextFile(path);
    try {
      if (f.name.endsWith(".jsonl")) {
        text.split("\n").forEach((l) => l.trim() && rows.push(JSON.parse(l)));
      } else {
        const doc = JSON.parse(text);
        if (!Array.isArray(doc)) throw new Error("a .json split file holds a list of rows");
        rows.push(...doc);
      }
    } catch (e) {
      throw new Error(`${where}: ${f.name}: ${(e as Error).message}`);
    }
  }
  const columns = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  return {
    total: rows.length,
    columns,
    where,
    async *rows(_cols: string[], limit = Infinity) {
      for (let i = 0; i < rows.length && i < limit; i++) yield rows[i];
    },
    close: () => Promise.resolve(),
  };
}

/** Open one split (the task's, or that of its image join). */
export async function openSplit(
  task: LoadedTask,
  field: "dataset" | "join_images",
  opts: SplitOptions = {},
): Promise<TableSource> {
  const ds = task.spec.dataset;
  if ("generator" in ds) return shapesSource(ds.n ?? DEMO_CONFIG.heldOut);
  const j = task.spec.join_images;
  const config = field === "dataset" ? ds.config : j?.config ?? ds.config;
  const split = field === "dataset" ? ds.split : j!.split;
  const { files, where } = await findFiles(task, field, config, split, opts);
  const kinds = new Set(files.map((f) => (f.name.endsWith(".parquet") ? "parquet" : "json")));
  if (kinds.size > 1) {
    throw new TaskError(task.file, "dataset.files", "mixes parquet and JSON files");
  }
  const label = `${where} ${config ? `${config}/` : ""}${split}`;
  return kinds.has("parquet") ? await parquetSource(files, label) : await jsonSource(files, label);
}

/** The demo's held-out shapes questions as a table (id, image, question, answer, kind). */
export function shapesSource(n: number): TableSource {
  const samples = heldOutSamples(DEMO_CONFIG, n);
  return {
    total: samples.length,
    columns: ["id", "image", "question", "answer"],
    where: `generated shapes (demo held-out set, ${n} questions)`,
    async *rows(_cols: string[], limit = Infinity) {
      for (let i = 0; i < samples.length && i < limit; i++) {
        const s = samples[i];
        yield { id: s.id, image: s.image as RgbImage, question: s.question, answer: s.reference };
      }
    },
    close: () => Promise.resolve(),
  };
}

/** The root column of a field path ("answers[].answer" → "answers"). */
export function rootColumn(path: string): string {
  return path.split(/[[.]/)[0];
}

/** Every column a task reads from its rows, with the task-file field naming it. */
export function taskColumns(task: LoadedTask): { column: string; field: string }[] {
  const s = task.spec;
  const out: { column: string; field: string }[] = [];
  s.images.forEach((c, i) => out.push({ column: c, field: `images[${i}]` }));
  if (s.id) out.push({ column: s.id, field: "id" });
  for (const f of ["answers", "choices", "answer", "category"] as const) {
    const v = s[f];
    if (v) out.push({ column: rootColumn(v), field: f });
  }
  for (const c of templateFields(s.prompt)) {
    if (c !== "options") out.push({ column: c, field: "prompt" });
  }
  if (s.join_images) out.push({ column: s.join_images.key, field: "join_images.key" });
  return out;
}

/** Check that the columns a task reads exist in its split. */
export function checkColumns(task: LoadedTask, src: TableSource): string[] {
  const have = new Set(src.columns);
  const need = taskColumns(task);
  for (const { column, field } of need) {
    if (!have.has(column)) {
      throw new TaskError(
        task.file,
        field,
        `column "${column}" is not in ${src.where} (columns: ${src.columns.join(", ")})`,
      );
    }
  }
  return [...new Set(need.map((n) => n.column))];
}

/** Images of a joined table by key (GQA's images by imageId), loaded for the keys asked. */
export class ImageIndex {
  #src: TableSource;
  #task: LoadedTask;
  #map: Map<string, unknown> | undefined;

  constructor(task: LoadedTask, src: TableSource) {
    this.#task = task;
    this.#src = src;
    const j = task.spec.join_images!;
    for (const [c, f] of [[j.id, "join_images.id"], [j.column, "join_images.column"]]) {
      if (!src.columns.includes(c)) {
        throw new TaskError(
          task.file,
          f,
          `column "${c}" is not in ${src.where} (columns: ${src.columns})`,
        );
      }
    }
  }

  /** The image stored under `key`. */
  async get(key: string): Promise<unknown> {
    if (!this.#map) {
      const j = this.#task.spec.join_images!;
      this.#map = new Map();
      for await (const r of this.#src.rows([j.id, j.column])) {
        this.#map.set(textOf(r[j.id]) ?? "", r[j.column]);
      }
    }
    if (!this.#map.has(key)) {
      throw new Error(
        `${this.#src.where}: no image with ${this.#task.spec.join_images!.id} = ${key}`,
      );
    }
    return this.#map.get(key);
  }

  close(): Promise<void> {
    this.#map = undefined;
    return this.#src.close();
  }
}

/** A cell as text (UTF-8 bytes decoded, numbers printed); undefined for null/absent. */
export function textOf(v: unknown): string | undefined {
  if (v === null || v === undefined) return undefined;
  if (typeof v === "string") return v;
  if (v instanceof Uint8Array) return new TextDecoder().decode(v);
  if (typeof v === "number" || typeof v === "bigint" || typeof v === "boolean") return String(v);
  return undefined;
}
