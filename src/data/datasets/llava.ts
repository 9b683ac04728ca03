/**
 * LLaVA-style conversation data: a JSON array (or JSONL, one record per line) of
 * `{ "id"?, "image": "relative/path.jpg", "conversations": [{"from": "human", "value": "<image>\n…"},
 * {"from": "gpt", "value": "…"}, …] }` with the images in a folder.
 *
 * Human/gpt messages are paired into turns (a leading system message is ignored). Records without
 * an image, with an empty or malformed conversation, whose image file is missing, unreadable or
 * over the size cap, or whose image path leads outside the image folder (absolute, `..`, a link
 * out; allowed with `allowOutside`) are skipped and counted. The order is a seeded permutation of the records (or file order with
 * `shuffle: false`), identical in every pass.
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
import { permutation, randInt } from "../rng.ts";
import {
  type Dataset,
  type DatasetState,
  type Sample,
  SkipCounter,
  stateField,
  type Turn,
} from "./types.ts";

/** Which turns of a multi-turn record become the sample. */
export type TurnSelection = "all" | "first" | "random";

/** Options of {@link LlavaDataset.load}. */
export interface LlavaOptions {
  /** The .json or .jsonl file. */
  file: string;
  /** Folder image paths are relative to; default the file's folder. */
  imageDir?: string;
  seed?: number;
  /** Default true. */
  shuffle?: boolean;
  /** Default "all" (every turn is trained). */
  turns?: TurnSelection;
  /**
   * Allow image paths outside `imageDir` (absolute, `..`, links leading out). Default false:
   * such records are skipped and counted as "outside the folder".
   */
  allowOutside?: boolean;
}

interface Record {
  id: string;
  image: string;
  turns: Turn[];
}

const ROLE_USER = new Set(["human", "user"]);
const ROLE_ASSISTANT = new Set(["gpt", "assistant"]);

/** Pairs a LLaVA `conversations` list into turns, or returns why it cannot. */
export function pairConversation(conv: unknown): Turn[] | string {
  if (!Array.isArray(conv) || conv.length === 0) return "no conversation";
  const msgs = conv.filter((m) => m && typeof m === "object" && m.from !== "system");
  const turns: Turn[] = [];
  for (let i = 0; i < msgs.length; i += 2) {
    const u = msgs[i], a = msgs[i + 1];
    if (!a) return "conversation ends with an unanswered message";
    if (!ROLE_USER.has(u.from) || !ROLE_ASSISTANT.has(a.from)) {
      return `conversation roles are not human/gpt alternating (got ${u.from}, ${a.from})`;
    }
    if (typeof u.value !== "string" || typeof a.value !== "string") {
      return "conversation value is not a string";
    }
    if (a.value.trim() === "") return "empty answer";
    turns.push({ user: u.value, assistant: a.value });
  }
  return turns.length ? turns : "no conversation";
}

/** A LLaVA JSON/JSONL dataset. Build it with {@link LlavaDataset.load}. */
export class LlavaDataset implements Dataset {
  readonly name: string;
  readonly skips: SkipCounter = new SkipCounter();
  readonly #records: Record[];
  readonly #order: Uint32Array;
  readonly #imageDir: string;
  readonly #seed: number;
  readonly #turns: TurnSelection;
  readonly #allowOutside: boolean;
  #pos = 0;
  #epoch = 0;

  private constructor(
    name: string,
    records: Record[],
    loadSkips: SkipCounter,
    opts: LlavaOptions & { imageDir: string },
  ) {
    this.name = name;
    this.#records = records;
    this.#imageDir = opts.imageDir;
    this.#seed = opts.seed ?? 0;
    this.#turns = opts.turns ?? "all";
    this.#allowOutside = opts.allowOutside ?? false;
    this.#order = opts.shuffle === false
      ? Uint32Array.from(records.keys())
      : permutation(records.length, this.#seed);
    this.skips.load(loadSkips.toJSON());
  }

  /** Reads and validates the records (images are read lazily, one per sample). */
  static async load(opts: LlavaOptions): Promise<LlavaDataset> {
    const text = await readTextBounded(opts.file, "dataset");
    let raw: unknown[];
    const trimmed = text.trimStart();
    if (trimmed.startsWith("[")) {
      raw = parseJsonText<unknown[]>(text, opts.file);
    } else {
      raw = [];
      text.split("\n").forEach((line, i) => {
        if (!line.trim()) return;
        try {
          raw.push(JSON.parse(line));
        } catch (e) {
          const col = jsonErrorOffset(line) + 1;
          throw new Error(
            `${opts.file}:${i + 1}:${col}: bad JSON line: ${(e as Error).message}`,
          );
        }
      });
    }
    const skips = new SkipCounter();
    const records: Record[] = [];
    raw.forEach((r, i) => {
      const rec = r as { id?: unknown; image?: unknown; conversations?: unknown };
      const id = rec?.id !== undefined ? String(rec.id) : String(i);
      if (typeof rec?.image !== "string" || rec.image === "") {
        skips.add("no image", id);
        return;
      }
      const turns = pairConversation(rec.conversations);
      if (typeof turns === "string") {
        skips.add(
          turns === "empty answer" ? "empty answer" : "bad conversation",
          `${id}: ${turns}`,
        );
        return;
      }
      records.push({ id, image: rec.image, turns });
    });
    const imageDir = opts.imageDir ?? join(opts.file, "..");
    return new LlavaDataset(`llava(${opts.file})`, records, skips, { ...opts, imageDir });
  }

  /** Usable records. */
  get length(): number {
    return this.#records.length;
  }

  async next(): Promise<Sample | undefined> {
    while (this.#pos < this.#order.length) {
      const index = this.#order[this.#pos++];
      const rec = this.#records[index];
      const at = await resolveInside(this.#imageDir, rec.image, this.#allowOutside);
      if ("refused" in at) {
        this.skips.add("outside the folder", `${rec.id}: ${at.refused}`);
        continue;
      }
      const path = at.path;
      let bytes: Uint8Array;
      try {
        bytes = await readBounded(path, "image");
      } catch (e) {
        const msg = (e as Error).message;
        const why = /^missing /.test(msg)
          ? "image file missing"
          : /too large/.test(msg)
          ? "too large"
          : "image file unreadable";
        this.skips.add(why, why === "image file missing" ? path : msg);
        continue;
      }
      let turns = rec.turns;
      if (this.#turns === "first") turns = turns.slice(0, 1);
      else if (this.#turns === "random") {
        const k = randInt(turns.length, this.#seed, "turn", this.#epoch, index);
        turns = [turns[k]];
      }
      return {
        id: `llava:${rec.id}`,
        image: bytes,
        question: turns[0].user,
        answer: turns[0].assistant,
        turns: turns.length > 1 ? turns : undefined,
        source: "llava",
      };
    }
    return undefined;
  }

  rewind(epoch: number): void {
    this.#epoch = epoch;
    this.#pos = 0;
  }

  state(): DatasetState {
    return {
      kind: "llava",
      records: this.#records.length,
      epoch: this.#epoch,
      pos: this.#pos,
      skips: this.skips.toJSON(),
    };
  }

  restore(state: DatasetState): void {
    if (state.kind !== "llava" || state.records !== this.#records.length) {
      throw new Error(
        `llava: state is for ${state.kind} with ${state.records} records, ` +
          `this dataset has ${this.#records.length}`,
      );
    }
    this.#epoch = stateField<number>(state, "epoch", "number", "llava");
    this.#pos = stateField<number>(state, "pos", "number", "llava");
    this.skips.load(state.skips);
  }
}
