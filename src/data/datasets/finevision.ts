/**
 * FineVision (`HuggingFaceM4/FineVision`) read as a stream of parquet row groups.
 *
 * Rows hold `images` (list of `{bytes, path}`), `texts` (list of `{user, assistant}`) and
 * `source`. One config (subset) per source; its shards are found by {@link resolveParquetShards}
 * in a local folder or on the hub. Only the row group holding the current row of each subset is
 * in memory, so the size of the dataset does not matter.
 *
 * Mixing follows Hugging Face `interleave_datasets(probabilities, seed,
 * stopping_strategy="all_exhausted")`: at every step a subset is drawn with probability
 * `w / Σw` (a pure function of the seed and the step number), its next row is taken (rows in
 * file order), a subset that runs out restarts from its first row and is marked exhausted, and
 * the pass ends once every subset has been exhausted at least once — small subsets are
 * oversampled.
 *
 * A row gives a sample with its first image and one turn (uniformly drawn per row and pass,
 * seeded; "first" for evaluation; or "all" turns). Rows with no image, no text, an empty answer
 * or a refusal answer (SiQ-VL's 16 phrases) are skipped and counted; so is a row group that
 * cannot be decoded (counted once, with shard, group and row range). A shard whose footer cannot
 * be read is refused with its name.
 *
 * @module
 */

import {
  type FileMetaData,
  parquetMetadataAsync,
  parquetReadObjects,
  type ParquetRow,
} from "../../deps.ts";
import { compressors } from "../../deps.ts";
import { randInt, uniform } from "../rng.ts";
import {
  type ParquetLocation,
  type ParquetShard,
  type RandomAccessFile,
  resolveParquetShards,
} from "./remote_files.ts";
import {
  type Dataset,
  type DatasetState,
  type JsonValue,
  type Sample,
  SkipCounter,
  stateField,
  type Turn,
} from "./types.ts";

/** The hub repository of FineVision. */
export const FINEVISION_REPO = "HuggingFaceM4/FineVision";

/** Answers containing any of these (case-insensitive) are refusals and are not trained on. */
export const REFUSAL_PHRASES: readonly string[] = [
  "cannot see",
  "can't see",
  "don't have access",
  "don't have the ability",
  "text-based AI",
  "as an AI",
  "I'm sorry",
  "I apologize",
  "unable to view",
  "cannot view",
  "I'm unable to",
  "I cannot provide",
  "I don't have the capability",
  "as a language model",
  "as a text-based",
  "I do not have access",
];
const REFUSALS_LOWER = REFUSAL_PHRASES.map((p) => p.toLowerCase());

/** True when `answer` contains a refusal phrase. */
export function isRefusal(answer: string): boolean {
  const a = answer.toLowerCase();
  return REFUSALS_LOWER.some((p) => a.includes(p));
}

/**
 * The subset drawn at mixing step `step`: index i with probability
 * `cumulative[i] − cumulative[i − 1]` (cumulative normalised weights ending at 1).
 */
export function interleaveChoice(seed: number, step: number, cumulative: number[]): number {
  const u = uniform(seed, "interleave", step);
  const i = cumulative.findIndex((c) => u < c);
  return i < 0 ? cumulative.length - 1 : i;
}

/** Which turns of a row become the sample. */
export type FineVisionTurns = "random" | "first" | "all";

/** Options of {@link FineVisionDataset.open}. */
export interface FineVisionOptions {
  /** Local folder or hub repository holding `<subset>/*.parquet` (or `data/<subset>/…`). */
  location: ParquetLocation;
  /** Subset (config) names, e.g. `["sharegpt4v(coco)", "LLaVA_Instruct_150K"]`. */
  subsets: string[];
  /** Mixing weights (default 1 each); must match `subsets` in length. */
  weights?: number[];
  /** Seed of the subset draws and turn choices (default 42). */
  seed?: number;
  /** Default "random". */
  turns?: FineVisionTurns;
  /** Skip refusal answers (default true). */
  refusalFilter?: boolean;
}

interface Cursor {
  shard: number;
  row: number;
}

interface RowGroupCache {
  shard: number;
  start: number;
  end: number;
  /** Undefined for a row group that could not be read (corrupt page or group). */
  rows: ParquetRow[] | undefined;
}

/** A row, or the end of the unreadable row group it sits in (rows to skip). */
type RowOrSkip = { row: ParquetRow } | { corruptUntil: number; detail: string };

/** Streams one subset's shards row by row, one row group in memory at a time. */
class SubsetReader {
  readonly #files: (RandomAccessFile | undefined)[];
  readonly #meta: (FileMetaData | undefined)[];
  #cache: RowGroupCache | undefined;
  #columns: string[] | undefined;

  constructor(readonly name: string, readonly shards: ParquetShard[]) {
    this.#files = shards.map(() => undefined);
    this.#meta = shards.map(() => undefined);
  }

  async metadata(shard: number): Promise<FileMetaData> {
    let md = this.#meta[shard];
    if (md) return md;
    const file = (this.#files[shard] ??= await this.shards[shard].open());
    try {
      md = await parquetMetadataAsync(file);
    } catch (e) {
      throw new Error(`${this.shards[shard].name}: not a readable parquet file: ${e}`);
    }
    const top = new Set(md.schema.slice(1).map((s) => s.name));
    for (const c of ["images", "texts"]) {
      if (!top.has(c)) {
        throw new Error(`${this.shards[shard].name}: no "${c}" column (not FineVision-shaped)`);
      }
    }
    this.#columns ??= ["images", "texts", ...(top.has("source") ? ["source"] : [])];
    return (this.#meta[shard] = md);
  }

  async rowCount(shard: number): Promise<number> {
    return Number((await this.metadata(shard)).num_rows);
  }

  /** Moves a cursor onto a real row (past empty shards); false if the subset has no rows. */
  async settle(c: Cursor): Promise<{ cursor: Cursor; wrapped: boolean } | undefined> {
    let { shard, row } = c;
    let wrapped = false;
    for (let tries = 0; tries <= this.shards.length; tries++) {
      if (row < await this.rowCount(shard)) return { cursor: { shard, row }, wrapped };
      shard++;
      row = 0;
      if (shard >= this.shards.length) {
        shard = 0;
        wrapped = true;
      }
    }
    return undefined;
  }

  /**
   * The row at `c`, or — when its row group cannot be read (a corrupt page, bad compression,
   * a truncated chunk) — where that group ends, so the caller skips the whole group. Only an
   * unreadable footer (in {@link metadata}) refuses the shard.
   */
  async row(c: Cursor): Promise<RowOrSkip> {
    const hit = this.#cache;
    const md = await this.metadata(c.shard);
    let why = "unreadable";
    let start = 0;
    for (let gi = 0; gi < md.row_groups.length; gi++) {
      const end = start + Number(md.row_groups[gi].num_rows);
      if (c.row < end) {
        const detail = () =>
          `${this.shards[c.shard].name} row group ${gi} (rows ${start}..${end - 1})`;
        if (!(hit && hit.shard === c.shard && hit.start === start)) {
          this.#cache = undefined; // release the previous group before reading the next
          let rows: ParquetRow[] | undefined;
          try {
            rows = await parquetReadObjects({
              file: this.#files[c.shard]!,
              metadata: md,
              columns: this.#columns,
              rowStart: start,
              rowEnd: end,
              compressors,
              utf8: false,
            });
            if (rows.length !== end - start) throw new Error(`${rows.length} rows decoded`);
          } catch (e) {
            rows = undefined;
            why = (e as Error).message;
          }
          this.#cache = { shard: c.shard, start, end, rows };
        }
        const rows = this.#cache!.rows;
        return rows
          ? { row: rows[c.row - start] }
          : { corruptUntil: end, detail: `${detail()}: ${why}` };
      }
      start = end;
    }
    throw new Error(`${this.shards[c.shard].name}: row ${c.row} is past the end`);
  }

  async close(): Promise<void> {
    this.#cache = undefined;
    for (const f of this.#files) await f?.close?.();
    this.#files.fill(undefined);
  }
}

function asText(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  if (v instanceof Uint8Array) return new TextDecoder().decode(v);
  return undefined;
}

/** FineVision subsets mixed into one deterministic, resumable stream (see module docs). */
export class FineVisionDataset implements Dataset {
  readonly name: string;
  readonly skips: SkipCounter = new SkipCounter();
  readonly #readers: SubsetReader[];
  readonly #cumulative: number[];
  readonly #seed: number;
  readonly #turns: FineVisionTurns;
  readonly #refusalFilter: boolean;
  #step = 0;
  #epoch = 0;
  #cursors: Cursor[];
  #exhausted: boolean[];

  private constructor(readers: SubsetReader[], weights: number[], opts: FineVisionOptions) {
    this.#readers = readers;
    const total = weights.reduce((a, b) => a + b, 0);
    let acc = 0;
    this.#cumulative = weights.map((w) => (acc += w / total));
    this.#seed = opts.seed ?? 42;
    this.#turns = opts.turns ?? "random";
    this.#refusalFilter = opts.refusalFilter ?? true;
    this.#cursors = readers.map(() => ({ shard: 0, row: 0 }));
    this.#exhausted = readers.map(() => false);
    this.name = `finevision(${opts.subsets.join(",")})`;
  }

  /** Resolves each subset's shards (reading no data yet) and builds the stream. */
  static async open(opts: FineVisionOptions): Promise<FineVisionDataset> {
    if (opts.subsets.length === 0) throw new Error("finevision: no subsets given");
    const weights = opts.weights ?? opts.subsets.map(() => 1);
    if (weights.length !== opts.subsets.length) {
      throw new Error(
        `finevision: ${weights.length} weights for ${opts.subsets.length} subsets`,
      );
    }
    if (weights.some((w) => !(w >= 0)) || !weights.some((w) => w > 0)) {
      throw new Error("finevision: weights must be >= 0 and not all 0");
    }
    const readers: SubsetReader[] = [];
    for (const s of opts.subsets) {
      readers.push(new SubsetReader(s, await resolveParquetShards(s, opts.location)));
    }
    return new FineVisionDataset(readers, weights, opts);
  }

  async next(): Promise<Sample | undefined> {
    while (!this.#exhausted.every((e) => e)) {
      const s = interleaveChoice(this.#seed, this.#step++, this.#cumulative);
      const reader = this.#readers[s];
      const settled = await reader.settle(this.#cursors[s]);
      if (!settled) throw new Error(`finevision: subset "${reader.name}" has no rows`);
      const at = settled.cursor;
      const got = await reader.row(at);
      // Advance: the next row (past a corrupt row group at once), or the first row again once
      // the subset has been used up. A resumed run reaches the same group and skips it the same.
      const next = "row" in got ? at.row + 1 : got.corruptUntil;
      const after = await reader.settle({ shard: at.shard, row: next });
      this.#cursors[s] = after!.cursor;
      if (after!.wrapped) this.#exhausted[s] = true;
      if (!("row" in got)) {
        this.skips.add("corrupt row group", got.detail);
        continue;
      }
      const id = `finevision:${reader.shards[at.shard].name}#${at.row}`;
      const sample = this.#toSample(got.row, id, reader.name, s, at);
      if (sample) return sample;
    }
    return undefined;
  }

  #toSample(row: ParquetRow, id: string, subset: string, s: number, at: Cursor) {
    const images = Array.isArray(row.images) ? row.images : [];
    const first = images[0] as { bytes?: unknown } | null | undefined;
    if (images.length === 0 || !first) {
      this.skips.add("no image", id);
      return undefined;
    }
    if (!(first.bytes instanceof Uint8Array) || first.bytes.length === 0) {
      this.skips.add("no image bytes", id);
      return undefined;
    }
    const texts = Array.isArray(row.texts) ? row.texts : [];
    const all: Turn[] = [];
    for (const t of texts) {
      const user = asText(t?.user), assistant = asText(t?.assistant);
      if (user === undefined || assistant === undefined) continue;
      all.push({ user, assistant });
    }
    if (all.length === 0) {
      this.skips.add("no text", id);
      return undefined;
    }
    let turns: Turn[];
    if (this.#turns === "all") turns = all;
    else if (this.#turns === "first") turns = [all[0]];
    else turns = [all[randInt(all.length, this.#seed, "turn", this.#epoch, s, at.shard, at.row)]];
    if (turns.some((t) => t.assistant.trim() === "")) {
      this.skips.add("empty answer", id);
      return undefined;
    }
    if (this.#refusalFilter && turns.some((t) => isRefusal(t.assistant))) {
      this.skips.add("refusal answer", id);
      return undefined;
    }
    return {
      id,
      image: first.bytes,
      question: turns[0].user,
      answer: turns[0].assistant,
      turns: turns.length > 1 ? turns : undefined,
      source: asText(row.source) ?? subset,
    } satisfies Sample;
  }

  rewind(epoch: number): void {
    this.#epoch = epoch;
    this.#step = 0;
    this.#cursors = this.#readers.map(() => ({ shard: 0, row: 0 }));
    this.#exhausted = this.#readers.map(() => false);
  }

  state(): DatasetState {
    return {
      kind: "finevision",
      subsets: this.#readers.map((r) => r.name),
      seed: this.#seed,
      epoch: this.#epoch,
      step: this.#step,
      cursors: this.#cursors.map((c) => [c.shard, c.row]),
      exhausted: [...this.#exhausted],
      skips: this.skips.toJSON(),
    };
  }

  restore(state: DatasetState): void {
    const who = "finevision";
    const names = this.#readers.map((r) => r.name);
    if (
      state.kind !== who || JSON.stringify(state.subsets) !== JSON.stringify(names) ||
      state.seed !== this.#seed
    ) {
      throw new Error(`${who}: state is for another mix (${JSON.stringify(state.subsets)})`);
    }
    const cursors = stateField<JsonValue[]>(state, "cursors", "object", who) as number[][];
    const exhausted = stateField<JsonValue[]>(state, "exhausted", "object", who) as boolean[];
    if (cursors.length !== names.length || exhausted.length !== names.length) {
      throw new Error(`${who}: state has ${cursors.length} cursors for ${names.length} subsets`);
    }
    this.#epoch = stateField<number>(state, "epoch", "number", who);
    this.#step = stateField<number>(state, "step", "number", who);
    this.#cursors = cursors.map(([shard, row]) => ({ shard, row }));
    this.#exhausted = [...exhausted];
    this.skips.load(state.skips);
  }

  async close(): Promise<void> {
    for (const r of this.#readers) await r.close();
  }
}
