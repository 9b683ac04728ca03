// Multiple choice (MMStar, MMMU, ScienceQA-IMG, AI2D): which option a free-text answer chose.
//
//   robust        the letter extractor lmms-eval uses since 2026-04 (mcq_extract, PR #1274),
//                 restated: after stripping , . ! ? ; : ' " (and markdown * `) from the ends,
//                 letter candidates are found by format, each with a priority — at the start
//                 10, at the end 9, after an answer phrase ("the answer is", "answer:",
//                 "option", "答案是", …) 7, "(B)" 6, "B." 5, "B:" 4, "B)" 3, "B " 2, a bare
//                 letter 0 — and the highest priority wins, the later position on ties. Only the
//                 task's option letters count, upper case outside an answer phrase; a capital
//                 "A" or "I" followed by a lower-case word is read as an article or pronoun.
//                 Before the letters: a reply that is just a letter, or just one option's text,
//                 is that option. After them (no letter found): the option whose text occurs in
//                 the reply (the last one when several do, the longest at the same place).
//   scienceqa     lmms-eval's ScienceQA rule: the stripped reply equals the letter (any case),
//                 or starts with a capital letter and "." and that letter is the answer
//   mmstar-strict lmms-eval's MMStar rule before 2026-04 (the published nanoVLM / SmolVLM era):
//                 lower-cased, the first character is the letter, or "(" then the letter, or
//                 "option " then the letter, or "the answer is " then the letter
// Accuracy is the mean of 0/1 scores; with categories, each category's mean and their
// unweighted mean (a macro average; MMStar's lmms-eval "average" over its L2 categories).

/** Letter-matching rules of {@link scoreChoice}. */
export type ChoiceRules = "robust" | "scienceqa" | "mmstar-strict";

/** Option letters A, B, … for `n` options. */
export function optionLetters(n: number): string[] {
  if (!(n >= 1 && n <= 26)) throw new Error(`multiple choice: ${n} options (1–26 supported)`);
  return Array.from({ length: n }, (_, i) => String.fromCharCode(65 + i));
}

/** The letter of option `index` (0-based). */
export function letterOf(index: number): string {
  return String.fromCharCode(65 + index);
}

const EDGE = /^[\s,.!?;:'"*`]+|[\s,.!?;:'"*`]+$/g;
const squash = (s: string) => s.toLowerCase().replace(EDGE, "").replace(/\s+/g, " ");
const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

interface Candidate {
  letter: string;
  priority: number;
  at: number;
}

/** How a letter was found (for the per-sample log). */
export interface Extracted {
  letter: string | undefined;
  how: string;
}

/**
 * The option a reply chose (robust rules), given the option texts or just their number.
 * Returns `letter: undefined` when nothing identifies an option.
 */
export function extractChoice(reply: string, options: readonly string[] | number): Extracted {
  const n = typeof options === "number" ? options : options.length;
  const texts = typeof options === "number" ? [] : options;
  const letters = optionLetters(n);
  const valid = new Set(letters);
  const t = reply.trim().replace(EDGE, "");
  if (!t) return { letter: undefined, how: "empty" };
  // Just a letter, possibly in brackets: "b", "(C)", "[D]".
  const lone = t.match(/^[([]?([A-Za-z])[)\]]?$/);
  if (lone && valid.has(lone[1].toUpperCase())) {
    return { letter: lone[1].toUpperCase(), how: "letter" };
  }
  // Just one option's text.
  const whole = squash(t);
  const same = texts.map((o, i) => (squash(o) === whole && whole ? i : -1)).filter((i) => i >= 0);
  if (same.length === 1) return { letter: letters[same[0]], how: "option text" };

  const set = letters.join("");
  const L = `[${set}]`;
  const found: Candidate[] = [];
  const add = (re: RegExp, priority: number, group = 1, lower = false) => {
    for (const m of t.matchAll(re)) {
      const letter = lower ? m[group].toUpperCase() : m[group];
      if (!valid.has(letter)) continue;
      const at = m.index! + m[0].lastIndexOf(m[group]);
      // "A dog …", "I think …": an article or a pronoun, not an option letter.
      if (
        (letter === "A" || letter === "I") && m[group] === letter &&
        /^ [a-z]/.test(t.slice(at + 1, at + 3))
      ) {
        const rest = t.slice(at + 1).trim().toLowerCase();
        const opt = texts[letters.indexOf(letter)];
        if (!(opt && rest.startsWith(squash(opt)) && squash(opt))) continue;
      }
      found.push({ letter, priority, at });
    }
  };
  const NB = "(?<![A-Za-z0-9])", NA = "(?![A-Za-z0-9])";
  add(new RegExp(`^[([]?(${L})${NA}`, "g"), 10);
  add(new RegExp(`${NB}[([]?(${L})[)\\]]?$`, "g"), 9);
  const phrase = String.raw`(?:the\s+)?(?:correct\s+|final\s+|best\s+)?(?:answer|option|choice)` +
    String
      .raw`(?:\s+is|\s+would\s+be|\s+should\s+be)?(?:\s*[:：]\s*|\s+)(?:option\s+)?|答案(?:是|为)?\s*[:：]?\s*|选\s*`;
  add(new RegExp(`(?:${phrase})[([]?([${set}${set.toLowerCase()}])${NA}`, "gi"), 7, 1, true);
  add(new RegExp(`\\((${L})\\)`, "g"), 6);
  add(new RegExp(`${NB}(${L})\\.(?!\\d)`, "g"), 5);
  add(new RegExp(`${NB}(${L}):`, "g"), 4);
  add(new RegExp(`${NB}(?<!\\()(${L})\\)`, "g"), 3);
  add(new RegExp(`${NB}(${L}) `, "g"), 2);
  add(new RegExp(`${NB}(${L})${NA}`, "g"), 0);
  if (found.length) {
    found.sort((a, b) => b.priority - a.priority || b.at - a.at);
    const hows: Record<number, string> = {
      10: "start",
      9: "end",
      7: "answer phrase",
      6: "(X)",
      5: "X.",
      4: "X:",
      3: "X)",
      2: "X ",
      0: "bare letter",
    };
    return { letter: found[0].letter, how: hows[found[0].priority] };
  }
  // No letter: an option's text inside the reply (whole words), the last one mentioned.
  const lower = t.toLowerCase();
  let best: { i: number; at: number; len: number } | undefined;
  texts.forEach((o, i) => {
    const s = squash(o);
    if (!s) return;
    const re = new RegExp(`(?<![\\p{L}\\p{N}])${escape(s)}(?![\\p{L}\\p{N}])`, "gu");
    for (const m of lower.matchAll(re)) {
      const at = m.index!;
      if (!best || at > best.at || (at === best.at && s.length > best.len)) {
        best = { i, at, len: s.length };
      }
    }
  });
  if (best) return { letter: letters[best.i], how: "option text inside" };
  return { letter: undefined, how: "no option found" };
}

/** The letter a reply is scored as under `rules`, and whether it is `gold`. */
export function scoreChoice(
  reply: string,
  gold: string,
  options: readonly string[] | number,
  rules: ChoiceRules = "robust",
): { correct: boolean; letter: string | undefined; how: string } {
  const g = gold.trim().toUpperCase();
  if (rules === "robust") {
    const e = extractChoice(reply, options);
    return { correct: e.letter === g, ...e };
  }
  if (rules === "scienceqa") {
    const p = reply.trim();
    if (p.toLowerCase() === g.toLowerCase()) return { correct: true, letter: g, how: "letter" };
    if (p.length >= 2 && /^\p{Lu}$/u.test(p[0]) && p[1] === ".") {
      return { correct: p[0].toLowerCase() === g.toLowerCase(), letter: p[0], how: "X." };
    }
    return { correct: false, letter: undefined, how: "no rule" };
  }
  // mmstar-strict: character positions of the lower-cased, stripped reply.
  const p = reply.toLowerCase().trim().replaceAll("\n", " ");
  const a = g.toLowerCase();
  const at = (i: number, how: string) => ({
    correct: p[i] === a,
    letter: p[i]?.toUpperCase(),
    how,
  });
  if (p.length === 0) return { correct: false, letter: undefined, how: "empty" };
  if (p[0] === a) return at(0, "first character");
  if (p[0] === "(" && p[1] === a) return at(1, "(X");
  if (p.startsWith("option ") && p[7] === a) return at(7, "option X");
  if (p.startsWith("the answer is ") && p[14] === a) return at(14, "the answer is X");
  return { correct: false, letter: p[0]?.toUpperCase(), how: "first character" };
}
