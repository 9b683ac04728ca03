/**
 * Column-mapped record files for stages 3 and 4: JSON arrays, JSONL and parquet files whose rows
 * carry an image and text columns, read into plain rows and mapped by column names.
 *
 * - Reasoning records (ScienceQA-, R1-style): `question` (or `problem`, `prompt`), `rationale`
 *   (or `reasoning`, `solution`, `explanation`), `answer` → a ReasoningSample whose assistant
 *   text is formatReasoning(rationale, answer, format).
 * - Preference records (RLAIF-V / VLFeedback-binarised / SPA-VL style): `question` (or
 *   `prompt`), `chosen`, `rejected` → a PreferenceSample. TRL's conversational form is accepted
 *   too: `prompt` a list of messages (the last user message's text is the question, earlier
 *   turns become the history), `chosen` / `rejected` lists holding one assistant message.
 * - Images: a path string (relative to the image folder, default the file's folder; never
 *   outside it unless allowed), a `{bytes}` struct (parquet image columns), or a list of either
 *   (the first is used), in the `image` or `images` column.
 * Every column name can be set explicitly (the --*_column flags); unset ones are looked up in
 * the candidate lists above, first match wins. Unusable rows are skipped and counted by reason.
 *
 * @module
 */

import { join } from "node:path";
import {
  jsonErrorOffset,
  parseJsonText,
  readBounded,
  readTextBounded,
  resolveInside,
} from "../../io/file.ts";
import { compressors, parquetReadObjects } from "../../deps.ts";
import { formatReasoning, type ReasoningFormat } from "../reasoning.ts";
import { permutation } from "../rng.ts";
import type { ReasoningSample } from "./cot_shapes.ts";
import { type Dataset, type DatasetState, SkipCounter, stateField, type Turn } from "./types.ts";

/** Column names (undefined = look up the defaults). */
export interface ColumnMap {
  image?: string;
  question?: string;
  rationale?: string;
  answer?: string;
  chosen?: string;
  rejected?: string;
}

/** Candidate names per role, first match wins. */
export const DEFAULT_COLUMNS: Record<keyof ColumnMap, string[]> = {
  image: ["image", "images", "image_path"],
  question: ["question", "problem", "prompt", "query"],
  rationale: ["rationale", "reasoning", "solution", "explanation", "cot"],
  answer: ["answer", "final_answer", "label"],
  chosen: ["chosen"],
  rejected: ["rejected"],
};

/** A preference pair about one image (stage 4 data). `answer` = chosen (for SFT and eval). */
export interface PreferenceSample extends ReasoningSample {
  chosen: string;
  rejected: string;
}

type Row = Record<string, unknown>;

/** Reads every row of a .json / .jsonl / .parquet file. */
export async function readRecordRows(file: string): Promise<Row[]> {
  if (/\.parquet$/i.test(file)) {
    const bytes = await readBounded(file, "dataset");
    const buf = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
    // utf8: false keeps binary columns (image bytes) as bytes; text cells are decoded below
    return await parquetReadObjects({
      file: buf as ArrayBuffer,
      compressors,
      utf8: false,
    }) as Row[];
  }
  const text = await readTextBounded(file, "dataset");
  if (text.trimStart().startsWith("[")) return parseJsonText<Row[]>(text, file);
  const rows: Row[] = [];
  text.split("\n").forEach((line, i) => {
    if (!line.trim()) return;
    try {
      rows.push(JSON.parse(line));
    } catch (e) {
      const col = jsonErrorOffset(line) + 1;
      throw new Error(`${file}:${i + 1}:${col}: bad JSON line: ${(e as Error).message}`);
    }
  });
  return rows;
}

/** The column used for `role`: the explicit one (which must exist) or the first candidate. */
export function resolveColumn(
  rows: Row[],
  role: keyof ColumnMap,
  map: ColumnMap,
  file: string,
  required: boolean,
): string | undefined {
  const keys = new Set<string>();
  for (const r of rows.slice(0, 50)) for (const k of Object.keys(r ?? {})) keys.add(k);
  const explicit = map[role];
  if (explicit !== undefined) {
    if (!keys.has(explicit)) {
      throw new Error(
        `${file}: --${role}_column ${explicit} is not a column (columns: ${[...keys].join(", ")})`,
      );
    }
    return explicit;
  }
  const found = DEFAULT_COLUMNS[role].find((c) => keys.has(c));
  if (!found && required) {
    throw new Error(
      `${file}: no ${role} column (looked for ${DEFAULT_COLUMNS[role].join(", ")}; set ` +
        `--${role}_column; columns: ${[...keys].join(", ")})`,
    );
  }
  return found;
}

/** Text of a message's content: a string, or the text parts of a parts list. */
function contentText(c: unknown): string | undefined {
  if (typeof c === "string") return c;
  if (c instanceof Uint8Array) return UTF8.decode(c);
  if (Array.isArray(c)) {
    const parts = c.filter((p) => p && typeof p === "object" && (p as Row).type === "text")
      .map((p) => String((p as Row).text ?? ""));
    return parts.length ? parts.join("\n") : undefined;
  }
  return undefined;
}

const UTF8 = new TextDecoder();

/** A text cell: a string (or UTF-8 bytes), or a conversational list (last message of `role`). */
function textCell(v: unknown, role: "user" | "assistant"): string | undefined {
  if (typeof v === "string") return v;
  if (v instanceof Uint8Array) return UTF8.decode(v);
  if (typeof v === "number" || typeof v === "bigint") return String(v);
  if (Array.isArray(v)) {
    const msgs = v.filter((m) => m && typeof m === "object" && (m as Row).role === role);
    const last = msgs[msgs.length - 1] as Row | undefined;
    return last ? contentText(last.content) : undefined;
  }
  return undefined;
}

/** Earlier user/assistant turns of a conversational prompt (all but its last user message). */
function historyOf(v: unknown): Turn[] {
  if (!Array.isArray(v)) return [];
  const turns: Turn[] = [];
  const msgs = v as Row[];
  for (let i = 0; i + 1 < msgs.length; i++) {
    if (msgs[i]?.role === "user" && msgs[i + 1]?.role === "assistant") {
      const u = contentText(msgs[i].content), a = contentText(msgs[i + 1].content);
      if (u !== undefined && a !== undefined) turns.push({ user: u, assistant: a });
    }
  }
  return turns;
}

/** PNG, JPEG, GIF or WebP magic bytes. */
function isImageFile(b: Uint8Array): boolean {
  const hex = Array.from(b.subarray(0, 4), (x) => x.toString(16).padStart(2, "0")).join("");
  return hex === "89504e47" || hex.startsWith("ffd8ff") || hex === "47494638" ||
    (hex === "52494646" && UTF8.decode(b.subarray(8, 12)) === "WEBP");
}

/** Options of {@link RecordsDataset.load}. */
export interface RecordsOptions {
  file: string;
  /** "reasoning" (question/rationale/answer) or "preference" (question/chosen/rejected). */
  kind: "reasoning" | "preference";
  columns?: ColumnMap;
  /** Folder image paths are relative to; default the file's folder. */
  imageDir?: string;
  /** How rationale + answer become the assistant text (reasoning records). Default think. */
  format?: ReasoningFormat;
  seed?: number;
  /** Default true. */
  shuffle?: boolean;
  allowOutside?: boolean;
}

interface Mapped {
  id: string;
  image: unknown;
  question: string;
  history: Turn[];
  rationale: string;
  finalAnswer: string;
  chosen?: string;
  rejected?: string;
}

/** A reasoning or preference record file (see the module docs). */
export class RecordsDataset implements Dataset {
  readonly name: string;
  readonly skips: SkipCounter = new SkipCounter();
  readonly #recs: Mapped[];
  readonly #order: Uint32Array;
  readonly #opts: RecordsOptions & { imageDir: string; format: ReasoningFormat };
  #pos = 0;
  #epoch = 0;

  private constructor(recs: Mapped[], skips: SkipCounter, opts: RecordsDataset["opts"]) {
    this.#recs = recs;
    this.#opts = opts;
    this.#order = opts.shuffle === false
      ? Uint32Array.from(recs.keys())
      : permutation(recs.length, opts.seed ?? 0);
    this.skips.load(skips.toJSON());
    this.name = `${opts.kind} records(${opts.file})`;
  }

  /** The resolved options. */
  get opts(): RecordsOptions & { imageDir: string; format: ReasoningFormat } {
    return this.#opts;
  }

  /** Reads and maps the rows (images are resolved lazily, one per sample). */
  static async load(opts: RecordsOptions): Promise<RecordsDataset> {
    const rows = await readRecordRows(opts.file);
    const map = opts.columns ?? {};
    const f = opts.file;
    const pref = opts.kind === "preference";
    const col = {
      image: resolveColumn(rows, "image", map, f, true)!,
      question: resolveColumn(rows, "question", map, f, true)!,
      rationale: pref ? undefined : resolveColumn(rows, "rationale", map, f, false),
      answer: pref ? undefined : resolveColumn(rows, "answer", map, f, true),
      chosen: pref ? resolveColumn(rows, "chosen", map, f, true) : undefined,
      rejected: pref ? resolveColumn(rows, "rejected", map, f, true) : undefined,
    };
    const skips = new SkipCounter();
    const recs: Mapped[] = [];
    rows.forEach((r, i) => {
      const id = r.id !== undefined && r.id !== null ? String(r.id) : String(i);
      const question = textCell(r[col.question], "user");
      if (question === undefined || !question.trim()) return skips.add("no question", id);
      if (r[col.image] === undefined || r[col.image] === null) return skips.add("no image", id);
      const m: Mapped = {
        id,
        image: r[col.image],
        question,
        history: historyOf(r[col.question]),
        rationale: "",
        finalAnswer: "",
      };
      if (pref) {
        const c = textCell(r[col.chosen!], "assistant"),
          j = textCell(r[col.rejected!], "assistant");
        if (!c?.trim() || !j?.trim()) return skips.add("empty chosen or rejected", id);
        if (c.trim() === j.trim()) return skips.add("chosen equals rejected", id);
        m.chosen = c;
        m.rejected = j;
        m.finalAnswer = c;
      } else {
        const a = r[col.answer!];
        if (a === undefined || a === null || String(a).trim() === "") {
          return skips.add("empty answer", id);
        }
        // ScienceQA style: an integer answer indexes a `choices` list → its letter, and the
        // options are appended to the question
        const choices = r.choices;
        if (Array.isArray(choices) && choices.length && Number.isInteger(Number(a))) {
          const k = Number(a);
          if (k < 0 || k >= choices.length) return skips.add("answer index outside choices", id);
          const opts = choices.map((c, j) =>
            `(${String.fromCharCode(65 + j)}) ${textCell(c, "user")}`
          );
          m.question = `${question}\nOptions: ${opts.join(" ")}`;
          m.finalAnswer = String.fromCharCode(65 + k);
        } else m.finalAnswer = textCell(a, "assistant") ?? String(a);
        const ra = col.rationale ? textCell(r[col.rationale], "assistant") : undefined;
        m.rationale = ra ?? "";
      }
      recs.push(m);
    });
    return new RecordsDataset(recs, skips, {
      ...opts,
      imageDir: opts.imageDir ?? join(opts.file, ".."),
      format: opts.format ?? "think",
    });
  }

  /** Usable records. */
  get length(): number {
    return this.#recs.length;
  }

  async #image(rec: Mapped): Promise<Uint8Array | string> {
    let v = rec.image;
    if (Array.isArray(v)) v = v[0];
    if (v instanceof Uint8Array) {
      // image file bytes, or a path stored as a binary parquet string
      if (isImageFile(v)) return v;
      v = UTF8.decode(v);
    } else if (v && typeof v === "object") {
      const o = v as Row;
      if (o.bytes instanceof Uint8Array && o.bytes.length) return o.bytes;
      v = o.path instanceof Uint8Array ? UTF8.decode(o.path) : o.path;
    }
    if (typeof v !== "string" || !v) return "image is neither a path nor {bytes}";
    const at = await resolveInside(this.#opts.imageDir, v, this.#opts.allowOutside ?? false);
    if ("refused" in at) return `outside the folder: ${at.refused}`;
    try {
      return await readBounded(at.path, "image");
    } catch (e) {
      return `image unreadable: ${(e as Error).message}`;
    }
  }

  async next(): Promise<ReasoningSample | PreferenceSample | undefined> {
    while (this.#pos < this.#order.length) {
      const rec = this.#recs[this.#order[this.#pos++]];
      const image = await this.#image(rec);
      if (typeof image === "string") {
        this.skips.add(image.replace(/:.*$/, ""), `${rec.id}: ${image}`);
        continue;
      }
      const base = {
        id: `records:${rec.id}`,
        image,
        question: rec.question,
        history: rec.history.length ? rec.history : undefined,
        source: this.#opts.file,
        rationale: rec.rationale,
        finalAnswer: rec.finalAnswer,
      };
      if (rec.chosen !== undefined) {
        return { ...base, answer: rec.chosen, chosen: rec.chosen, rejected: rec.rejected! };
      }
      return {
        ...base,
        answer: formatReasoning(rec.rationale, rec.finalAnswer, this.#opts.format),
      };
    }
    return undefined;
  }

  rewind(epoch: number): void {
    this.#epoch = epoch;
    this.#pos = 0;
  }

  state(): DatasetState {
    return { kind: "records", file: this.#opts.file, epoch: this.#epoch, pos: this.#pos };
  }

  restore(state: DatasetState): void {
    if (state.kind !== "records" || state.file !== this.#opts.file) {
      throw new Error(`records: state is for ${state.kind} ${state.file}, not ${this.#opts.file}`);
    }
    this.#epoch = stateField<number>(state, "epoch", "number", "records");
    this.#pos = stateField<number>(state, "pos", "number", "records");
  }
}
