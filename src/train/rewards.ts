// Verifiable rewards for GRPO (stage 4 --rl grpo): a reward function scores each completion
// against its prompt's reference answer.
//
//   exact     1 if the extracted answer equals the reference after normalisation (lower case,
//             punctuation and articles removed, whitespace collapsed), else 0
//   numeric   1 if the last number in the extracted answer equals the reference's number
//             (digits or the words zero … twenty; relative tolerance 1e-6), else 0
//   mc        1 if the multiple-choice letter found in the answer ("B", "(B)", "B.", "answer is
//             B", …) is the reference's letter, else 0
//   format    1 if the completion follows the reasoning format (splitReasoning's wellFormed:
//             tags present, closed, in order, a non-empty answer), else 0
// The answer is extracted with the run's --reasoning_format (src/data/reasoning.ts), the same
// rule evaluation and `generate --show_reasoning` use.
//
// A user reward: any other --reward_funcs entry is a path or URL of a TypeScript / JavaScript
// module exporting `reward` (or a default export) with the RewardFunction signature below; it
// may be async. Example (my_reward.ts):
//
//   export function reward(completions: string[], ctx: RewardContext): number[] {
//     return completions.map((c) => (c.length < 200 ? 1 : 0));
//   }

import { pathToFileURL } from "node:url";
import { resolve } from "node:path";
import { extractAnswer, type ReasoningFormat, splitReasoning } from "../data/reasoning.ts";

/** What a reward function sees besides the completions (one entry per completion). */
export interface RewardContext {
  /** The reference answer of each completion's prompt. */
  answers: string[];
  /** The prompt's question text. */
  questions: string[];
  /** The run's reasoning format. */
  format: ReasoningFormat;
}

/** Scores, one per completion (finite numbers; NaN is refused). */
export type RewardFunction = (
  completions: string[],
  ctx: RewardContext,
) => number[] | Promise<number[]>;

/** A reward function with the name it is logged under (rewards/<name>/mean). */
export interface NamedReward {
  name: string;
  fn: RewardFunction;
}

const ARTICLES = new Set(["a", "an", "the"]);

/** Lower case, no punctuation, no articles, single spaces. */
export function normalizeAnswer(s: string): string {
  return s.toLowerCase().replace(/[^\p{L}\p{N}\s.-]/gu, " ").replace(/(?<!\d)\.|\.(?!\d)/g, " ")
    .split(/\s+/).filter((w) => w && !ARTICLES.has(w)).join(" ");
}

const NUMBER_WORDS = [
  "zero",
  "one",
  "two",
  "three",
  "four",
  "five",
  "six",
  "seven",
  "eight",
  "nine",
  "ten",
  "eleven",
  "twelve",
  "thirteen",
  "fourteen",
  "fifteen",
  "sixteen",
  "seventeen",
  "eighteen",
  "nineteen",
  "twenty",
];

/** The last number in `s` (digits with sign / decimals / thousands commas, or a number word). */
export function lastNumber(s: string): number | null {
  const re = new RegExp(`-?\\d[\\d,]*(?:\\.\\d+)?|\\b(?:${NUMBER_WORDS.join("|")})\\b`, "gi");
  let last: string | null = null;
  for (const m of s.matchAll(re)) last = m[0];
  if (last === null) return null;
  const w = NUMBER_WORDS.indexOf(last.toLowerCase());
  if (w >= 0) return w;
  const v = Number(last.replace(/,/g, ""));
  return Number.isFinite(v) ? v : null;
}

/** The multiple-choice letter (A–J) an answer names, or null. */
export function choiceLetter(s: string): string | null {
  const t = s.trim();
  const pats = [
    /^\(([A-Ja-j])\)/, // "(B)", "(b) text"
    /^([A-J])(?:[.:)\s]|$)/, // "B", "B.", "B) text"
    /\b(?:answer|option|choice)\s*(?:is|:)?\s*\(?([A-J])\)?(?![A-Za-z])/i,
    /\(([A-J])\)/,
  ];
  for (const p of pats) {
    const m = t.match(p);
    if (m) return m[1].toUpperCase();
  }
  return null;
}

function perCompletion(
  f: (answer: string, completion: string, format: ReasoningFormat) => boolean,
): RewardFunction {
  return (completions, ctx) =>
    completions.map((c, i) => (f(ctx.answers[i], c, ctx.format) ? 1 : 0));
}

/** The built-in rewards by name. */
export const BUILTIN_REWARDS: Record<string, RewardFunction> = {
  exact: perCompletion((ref, c, fmt) => {
    const a = normalizeAnswer(extractAnswer(c, fmt));
    return a.length > 0 && a === normalizeAnswer(ref);
  }),
  numeric: perCompletion((ref, c, fmt) => {
    const want = lastNumber(ref), got = lastNumber(extractAnswer(c, fmt));
    if (want === null || got === null) return false;
    return Math.abs(got - want) <= 1e-6 * Math.max(1, Math.abs(want));
  }),
  mc: perCompletion((ref, c, fmt) => {
    const want = choiceLetter(ref), got = choiceLetter(extractAnswer(c, fmt));
    return want !== null && got === want;
  }),
  format: perCompletion((_ref, c, fmt) => splitReasoning(c, fmt).wellFormed),
};

/**
 * The reward functions named by --reward_funcs: built-in names, or module paths / URLs
 * (a relative path is resolved against `cwd`).
 */
export async function loadRewardFunctions(
  names: string[],
  cwd = Deno.cwd(),
): Promise<NamedReward[]> {
  if (!names.length) throw new Error("--reward_funcs: at least one reward function is needed");
  const out: NamedReward[] = [];
  for (const name of names) {
    const builtin = BUILTIN_REWARDS[name];
    if (builtin) {
      out.push({ name, fn: builtin });
      continue;
    }
    if (!/[./\\]/.test(name)) {
      throw new Error(
        `--reward_funcs ${name}: not a built-in reward (${
          Object.keys(BUILTIN_REWARDS).join(", ")
        }) ` +
          `nor a module path`,
      );
    }
    const url = /^[a-z]+:\/\//i.test(name) ? name : pathToFileURL(resolve(cwd, name)).href;
    let mod: Record<string, unknown>;
    try {
      mod = await import(url);
    } catch (e) {
      throw new Error(`--reward_funcs ${name}: cannot import ${url}: ${(e as Error).message}`);
    }
    const fn = mod.reward ?? mod.default;
    if (typeof fn !== "function") {
      throw new Error(`--reward_funcs ${name}: the module exports no function "reward" or default`);
    }
    const base = name.replace(/^.*[/\\]/, "").replace(/\.[a-z]+$/i, "");
    out.push({ name: base, fn: fn as RewardFunction });
  }
  return out;
}

/** Run every reward on the completions: scores[k][i] of reward k for completion i. */
export async function scoreCompletions(
  rewards: NamedReward[],
  completions: string[],
  ctx: RewardContext,
): Promise<number[][]> {
  const out: number[][] = [];
  for (const r of rewards) {
    const s = await r.fn(completions, ctx);
    if (!Array.isArray(s) || s.length !== completions.length) {
      throw new Error(
        `reward ${r.name}: returned ${Array.isArray(s) ? s.length : typeof s} scores for ` +
          `${completions.length} completions`,
      );
    }
    s.forEach((v, i) => {
      if (typeof v !== "number" || !Number.isFinite(v)) {
        throw new Error(`reward ${r.name}: score ${i} is ${v}, not a finite number`);
      }
    });
    out.push(s);
  }
  return out;
}
