// Evaluation task files: small declarative JSON documents in the spirit of lmms-eval's YAML
// tasks (format documented in src/eval/README.md). This module reads and validates them; the
// data they name is opened by dataset.ts and run by runner.ts.

import { createHash } from "node:crypto";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseReasoningFormat, type ReasoningFormat } from "../data/reasoning.ts";
import { type Metric, parseMetric } from "./metrics.ts";
import { checkTemplate } from "./prompt.ts";

/** Where a task's rows come from. */
export type TaskDataset =
  | { hub: string; config?: string; split: string; revision?: string; files?: string[] }
  | { path: string; config?: string; split: string; files?: string[] }
  | { generator: "shapes"; n?: number };

/** Images kept in another table of the same dataset, joined by a key (GQA). */
export interface ImageJoin {
  config?: string;
  split: string;
  /** Column of the task's rows holding the key. */
  key: string;
  /** Column of the image table holding the key. */
  id: string;
  /** Column of the image table holding the image. */
  column: string;
}

/** Decoding settings (greedy by default). */
export interface TaskGeneration {
  max_new_tokens: number;
  /** 0 = greedy. */
  temperature: number;
  num_beams: number;
  seed: number;
}

/** A validated task file. */
export interface TaskSpec {
  task: string;
  description?: string;
  dataset: TaskDataset;
  /** Image column(s): the first non-empty one of a row is its image. */
  images: string[];
  join_images?: ImageJoin;
  /** Column with a stable sample id (default: the row number). */
  id?: string;
  /** Prompt template (placeholders: see README). */
  prompt: string;
  /** Field path of the reference answer(s): "col", "col[]", "col[].sub". */
  answers?: string;
  /** Multiple choice: field path of the option texts. */
  choices?: string;
  /** Multiple choice: the gold answer (letter, 0-based index or option text). */
  answer?: string;
  /** Multiple choice without a choices column: the option count (default 4). */
  num_choices?: number;
  /** Column for per-category breakdowns. */
  category?: string;
  metrics: string[];
  generation: TaskGeneration;
  reasoning_format: ReasoningFormat;
  num_fewshot: 0;
}

/** A task file, parsed, with where it came from and its hash. */
export interface LoadedTask {
  spec: TaskSpec;
  /** The file it was read from (for error messages). */
  file: string;
  metrics: Metric[];
  /** sha256 of the canonical spec (first 16 hex digits). */
  hash: string;
}

/** The folder of the shipped task files. */
export const TASKS_DIR: string = join(dirname(fileURLToPath(import.meta.url)), "tasks");

const TOP_KEYS = new Set([
  "task",
  "description",
  "dataset",
  "images",
  "join_images",
  "id",
  "prompt",
  "answers",
  "choices",
  "answer",
  "num_choices",
  "category",
  "metrics",
  "generation",
  "reasoning_format",
  "num_fewshot",
]);

/** An error in a task file, naming the file and the field. */
export class TaskError extends Error {
  constructor(readonly file: string, readonly field: string, message: string) {
    super(`${file}: field "${field}": ${message}`);
    this.name = "TaskError";
  }
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);

/** Validate a parsed task document (`file` names it in errors). */
export function parseTask(doc: unknown, file: string): LoadedTask {
  const err = (field: string, msg: string) => new TaskError(file, field, msg);
  if (!isObj(doc)) throw err("(top)", "a task file is a JSON object");
  for (const k of Object.keys(doc)) {
    if (!TOP_KEYS.has(k)) throw err(k, `unknown field (known: ${[...TOP_KEYS].join(", ")})`);
  }
  const str = (k: string, required: boolean, o: Obj = doc, prefix = ""): string | undefined => {
    const v = o[k];
    if (v === undefined) {
      if (required) throw err(prefix + k, "missing");
      return undefined;
    }
    if (typeof v !== "string" || v === "") throw err(prefix + k, "must be a non-empty string");
    return v;
  };
  const task = str("task", true)!;
  if (!/^[A-Za-z0-9_.-]+$/.test(task)) throw err("task", `"${task}": letters, digits, _ . - only`);

  // dataset
  const ds = doc.dataset;
  if (!isObj(ds)) throw err("dataset", "missing or not an object");
  let dataset: TaskDataset;
  const dsKeys = (allowed: string[]) => {
    for (const k of Object.keys(ds)) {
      if (!allowed.includes(k)) throw err(`dataset.${k}`, `unknown field (known: ${allowed})`);
    }
  };
  const files = (): string[] | undefined => {
    if (ds.files === undefined) return undefined;
    if (
      !Array.isArray(ds.files) || !ds.files.length || ds.files.some((f) => typeof f !== "string")
    ) {
      throw err("dataset.files", "must be a non-empty list of paths");
    }
    return ds.files as string[];
  };
  if (ds.generator !== undefined) {
    dsKeys(["generator", "n"]);
    if (ds.generator !== "shapes") {
      throw err("dataset.generator", `unknown generator "${ds.generator}" (known: shapes)`);
    }
    if (ds.n !== undefined && !(Number.isInteger(ds.n) && (ds.n as number) > 0)) {
      throw err("dataset.n", "must be a positive integer");
    }
    dataset = { generator: "shapes", n: ds.n as number | undefined };
  } else if (ds.hub !== undefined) {
    dsKeys(["hub", "config", "split", "revision", "files"]);
    const hub = str("hub", true, ds, "dataset.")!;
    if (!/^[^/\s]+\/[^/\s]+$/.test(hub)) throw err("dataset.hub", `"${hub}" is not "org/name"`);
    dataset = {
      hub,
      config: str("config", false, ds, "dataset."),
      split: str("split", true, ds, "dataset.")!,
      revision: str("revision", false, ds, "dataset."),
      files: files(),
    };
  } else if (ds.path !== undefined) {
    dsKeys(["path", "config", "split", "files"]);
    let path = str("path", true, ds, "dataset.")!;
    if (!path.startsWith("/")) path = join(dirname(file), path);
    dataset = {
      path,
      config: str("config", false, ds, "dataset."),
      split: str("split", true, ds, "dataset.")!,
      files: files(),
    };
  } else throw err("dataset", 'needs "hub" (repo id), "path" (local folder) or "generator"');

  // columns
  const images = doc.images === undefined ? [] : doc.images;
  if (!Array.isArray(images) || images.some((c) => typeof c !== "string" || !c)) {
    throw err("images", "must be a list of column names");
  }
  let join_images: ImageJoin | undefined;
  if (doc.join_images !== undefined) {
    const j = doc.join_images;
    if (!isObj(j)) throw err("join_images", "must be an object");
    for (const k of Object.keys(j)) {
      if (!["config", "split", "key", "id", "column"].includes(k)) {
        throw err(`join_images.${k}`, "unknown field");
      }
    }
    join_images = {
      config: str("config", false, j, "join_images."),
      split: str("split", true, j, "join_images.")!,
      key: str("key", true, j, "join_images.")!,
      id: str("id", true, j, "join_images.")!,
      column: str("column", true, j, "join_images.")!,
    };
  }
  if (!("generator" in dataset) && images.length === 0 && !join_images) {
    throw err("images", "no image column (and no join_images)");
  }
  const prompt = str("prompt", true)!;
  try {
    checkTemplate(prompt);
  } catch (e) {
    throw err("prompt", (e as Error).message);
  }
  const metricsRaw = doc.metrics;
  if (!Array.isArray(metricsRaw) || metricsRaw.length === 0) {
    throw err("metrics", "must be a non-empty list");
  }
  const metrics = metricsRaw.map((m, i) => {
    if (typeof m !== "string") throw err(`metrics[${i}]`, "must be a metric spec string");
    try {
      return parseMetric(m);
    } catch (e) {
      throw err(`metrics[${i}]`, (e as Error).message);
    }
  });
  const answers = str("answers", false),
    choices = str("choices", false),
    answer = str("answer", false);
  for (const m of metrics) {
    if (m.name === "mc_accuracy" ? !answer && !answers : !answers) {
      throw err(
        m.name === "mc_accuracy" ? "answer" : "answers",
        `metric ${m.spec} needs reference answers`,
      );
    }
  }
  if (
    doc.num_choices !== undefined &&
    !(Number.isInteger(doc.num_choices) && (doc.num_choices as number) >= 2)
  ) {
    throw err("num_choices", "must be an integer >= 2");
  }

  // generation
  const g = doc.generation === undefined ? {} : doc.generation;
  if (!isObj(g)) throw err("generation", "must be an object");
  const gen: TaskGeneration = { max_new_tokens: 16, temperature: 0, num_beams: 1, seed: 0 };
  for (const [k, v] of Object.entries(g)) {
    if (!(k in gen)) throw err(`generation.${k}`, `unknown field (known: ${Object.keys(gen)})`);
    const ok = typeof v === "number" && Number.isFinite(v) &&
      (k === "temperature" ? v >= 0 : Number.isInteger(v) && v >= (k === "seed" ? 0 : 1));
    if (!ok) throw err(`generation.${k}`, `invalid value ${JSON.stringify(v)}`);
    (gen as unknown as Record<string, number>)[k] = v as number;
  }
  let reasoning_format: ReasoningFormat = "none";
  if (doc.reasoning_format !== undefined) {
    try {
      reasoning_format = parseReasoningFormat(String(doc.reasoning_format), "reasoning_format");
    } catch (e) {
      throw err("reasoning_format", (e as Error).message);
    }
  }
  if (doc.num_fewshot !== undefined && doc.num_fewshot !== 0) {
    throw err("num_fewshot", "only 0 (zero-shot) is supported");
  }
  const spec: TaskSpec = {
    task,
    description: str("description", false),
    dataset,
    images: images as string[],
    join_images,
    id: str("id", false),
    prompt,
    answers,
    choices,
    answer,
    num_choices: doc.num_choices as number | undefined,
    category: str("category", false),
    metrics: metrics.map((m) => m.spec),
    generation: gen,
    reasoning_format,
    num_fewshot: 0,
  };
  const hash = createHash("sha256").update(canonicalJson(spec)).digest("hex").slice(0, 16);
  return { spec, file, metrics, hash };
}

/** JSON with sorted keys and no undefined fields (stable hashes). */
export function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(",")}]`;
  if (isObj(v)) {
    const keys = Object.keys(v).filter((k) => v[k] !== undefined).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(v[k])}`).join(",")}}`;
  }
  return JSON.stringify(v);
}

/** Names of the shipped tasks. */
export function shippedTasks(): string[] {
  return [...Deno.readDirSync(TASKS_DIR)].filter((e) => e.name.endsWith(".json"))
    .map((e) => basename(e.name, ".json")).sort();
}

/** A task by shipped name ("vqav2") or by path to a task file. */
export async function loadTask(nameOrPath: string): Promise<LoadedTask> {
  const file = nameOrPath.endsWith(".json") ? nameOrPath : join(TASKS_DIR, `${nameOrPath}.json`);
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new Error(
        `unknown task "${nameOrPath}" (shipped: ${
          shippedTasks().join(", ")
        }; or a path to a .json task file)`,
      );
    }
    throw e;
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new Error(`${file}: not valid JSON: ${(e as Error).message}`);
  }
  return parseTask(doc, file);
}
