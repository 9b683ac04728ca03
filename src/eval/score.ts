// Score mode: score a JSONL file of predictions with one metric, no model. Each line is
//   {"prediction": "...", "answers": ["...", ...]}
// and for multiple choice also "choices": [...] and "answer": "B" (optionally "category").
// The same metric code as the task runner, so numbers can be checked against other tools.
// With a reasoning format, the final answer is extracted first (src/data/reasoning.ts), as the
// runner does with generated text.

import { extractAnswer, type ReasoningFormat } from "../data/reasoning.ts";
import { type EvalDoc, parseMetric, type SampleScore } from "./metrics.ts";

/** The aggregate of `metric` over the lines of `text` (`file` names it in errors). */
export function scoreJsonl(
  text: string,
  metricSpec: string,
  file = "input",
  format: ReasoningFormat = "none",
): { metric: string; values: Record<string, number>; n: number; headline: string } {
  const metric = parseMetric(metricSpec);
  const rows: { score: SampleScore; doc: EvalDoc }[] = [];
  text.split("\n").forEach((line, i) => {
    if (!line.trim()) return;
    const where = `${file}:${i + 1}`;
    let o: Record<string, unknown>;
    try {
      o = JSON.parse(line);
    } catch (e) {
      throw new Error(`${where}: not JSON: ${(e as Error).message}`);
    }
    if (typeof o !== "object" || o === null || Array.isArray(o)) {
      throw new Error(`${where}: not an object`);
    }
    if (typeof o.prediction !== "string") {
      throw new Error(`${where}: "prediction" must be a string`);
    }
    const strings = (k: string): string[] | undefined => {
      const v = o[k];
      if (v === undefined) return undefined;
      if (!Array.isArray(v) || v.some((x) => typeof x !== "string")) {
        throw new Error(`${where}: "${k}" must be a list of strings`);
      }
      return v as string[];
    };
    const answer = o.answer === undefined ? undefined : String(o.answer);
    const doc: EvalDoc = {
      id: String(o.id ?? i + 1),
      answers: strings("answers") ?? (answer ? [answer] : []),
      choices: strings("choices"),
      answer,
      category: o.category === undefined ? undefined : String(o.category),
    };
    try {
      rows.push({ doc, score: metric.score(extractAnswer(o.prediction, format), doc) });
    } catch (e) {
      throw new Error(`${where}: ${(e as Error).message}`);
    }
  });
  if (!rows.length) throw new Error(`${file}: no samples`);
  const values = metric.aggregate(rows);
  const key = metric.name === "yes_no" ? "yes_no_accuracy" : metric.name;
  return { metric: metric.spec, values, n: rows.length, headline: key };
}
