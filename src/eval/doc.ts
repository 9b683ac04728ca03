// A dataset row → what the runner needs: the prompt, the image, and the document the metrics
// score against (references, options, gold letter, category).
//
// Field paths: "col" (a string or number, or a list of them), "col[]" (a list), "col[].sub"
// (a list of objects: each one's "sub", lmms-lab VQAv2's answers[].answer).

import type { ImageSource } from "../data/image.ts";
import type { EvalDoc } from "./metrics.ts";
import { formatOptions, renderTemplate } from "./prompt.ts";
import type { LoadedTask } from "./task.ts";
import { type Row, textOf } from "./dataset.ts";

/** One question ready to run. */
export interface TaskItem {
  doc: EvalDoc;
  /** The user text (the processor adds the image placeholder and the chat template). */
  prompt: string;
  /** The image as stored: encoded bytes or RGB pixels. */
  image: ImageSource;
}

/** Values of a field path in a row, as strings. */
export function fieldValues(row: Row, path: string): string[] {
  const m = path.match(/^([^[.]+)(\[\])?(?:\.(.+))?$/);
  if (!m) throw new Error(`bad field path "${path}"`);
  const v = row[m[1]];
  const list = Array.isArray(v) ? v : v === null || v === undefined ? [] : [v];
  const sub = m[3];
  return list.map((x) => textOf(sub ? (x as Record<string, unknown> | null)?.[sub] : x))
    .filter((x): x is string => x !== undefined);
}

/** An image cell ({bytes, path} struct, raw bytes, or RGB pixels) as an image source. */
export function imageOf(v: unknown): ImageSource | undefined {
  if (v instanceof Uint8Array) return v.length ? v : undefined;
  if (v && typeof v === "object") {
    const o = v as Record<string, unknown>;
    if (o.bytes instanceof Uint8Array && o.bytes.length) return o.bytes;
    if (typeof o.width === "number" && o.data instanceof Uint8Array) {
      return o as unknown as ImageSource;
    }
  }
  return undefined;
}

/** The row's item; `image` is the (already joined) image cell when the task joins images. */
export function rowToItem(task: LoadedTask, row: Row, index: number, joined?: unknown): TaskItem {
  const s = task.spec;
  const id = s.id ? textOf(row[s.id]) ?? String(index) : `${s.task}:${index}`;
  const choices = s.choices ? fieldValues(row, s.choices) : undefined;
  let answer: string | undefined;
  if (s.answer) {
    const raw = row[s.answer];
    const t = textOf(raw);
    // A number (or a digit string with a choices list) is a 0-based option index.
    if (typeof raw === "number" || typeof raw === "bigint" || (t && /^\d+$/.test(t) && choices)) {
      answer = String.fromCharCode(65 + Number(t));
    } else answer = t;
  }
  const answers = s.answers ? fieldValues(row, s.answers) : answer ? [answer] : [];
  const doc: EvalDoc = {
    id,
    answers,
    choices,
    answer,
    numChoices: s.num_choices,
    category: s.category ? textOf(row[s.category]) : undefined,
  };
  const prompt = renderTemplate(s.prompt, (name) => {
    if (name === "options") return formatOptions(choices ?? []);
    return fieldValues(row, name).join(", ");
  });
  let image: ImageSource | undefined;
  if (joined !== undefined) image = imageOf(joined);
  else {
    for (const c of s.images) {
      image = imageOf(row[c]);
      if (image) break;
    }
  }
  if (!image) {
    throw new Error(`${task.file}: sample ${id} has no image (columns ${s.images.join(", ")})`);
  }
  return { doc, prompt, image };
}
