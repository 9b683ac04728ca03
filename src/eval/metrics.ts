// The metric registry: a metric is named by a spec "name" or "name:rules" (task files, score
// mode, the CLI), scores one prediction against one document, and aggregates the scores of a
// task into named values. The rules of each family live in their own file.
//
//   name              rules (first = default)          result keys
//   vqa_accuracy      vqav2 | textvqa | official       vqa_accuracy
//   anls              (τ = 0.5)                        anls
//   mc_accuracy       robust | scienceqa | mmstar-strict
//                                                      mc_accuracy, and with categories
//                                                      mc_accuracy/<category>, mc_accuracy_macro
//   exact_match       gqa | edges | exact              exact_match
//   relaxed_accuracy  (5% relative tolerance)          relaxed_accuracy
//   yes_no            exact | pope                     yes_no_accuracy, _precision, _recall,
//                                                      _f1, _yes_ratio
// Rows with a category add "<key>/<category>" means (multiple choice: also their macro mean).

import { anls } from "./anls.ts";
import { type ChoiceRules, scoreChoice } from "./choice.ts";
import { exactMatch, type ExactRules } from "./exact.ts";
import { relaxedAccuracy } from "./relaxed.ts";
import { vqaAccuracy, type VqaRules } from "./vqa.ts";
import { parseYesNo, referenceYesNo, type YesNoRules, yesNoStats } from "./yesno.ts";

/** What a prediction is scored against. */
export interface EvalDoc {
  id: string;
  /** Reference answers (VQA: the human answers; MC: the gold letter and/or option text). */
  answers: string[];
  /** Multiple choice: the option texts (may be absent when the question embeds them). */
  choices?: string[];
  /** Multiple choice: the gold letter. */
  answer?: string;
  /** Multiple choice: option count when `choices` is absent (default 4). */
  numChoices?: number;
  category?: string;
}

/** One prediction's score. */
export interface SampleScore {
  /** In [0, 1]. */
  score: number;
  /** What the metric read from the prediction (a letter, yes/no, the normalised text). */
  parsed?: string;
}

/** A metric ready to use. */
export interface Metric {
  /** The spec it was made from, normalised ("vqa_accuracy:vqav2"). */
  spec: string;
  name: string;
  rules?: string;
  score(prediction: string, doc: EvalDoc): SampleScore;
  aggregate(rows: readonly { score: SampleScore; doc: EvalDoc }[]): Record<string, number>;
}

const mean = (xs: readonly number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0);

/** Per-category means of the per-sample scores ("key/<category>"), when rows have categories. */
function byCategory(key: string, rows: readonly { score: SampleScore; doc: EvalDoc }[]) {
  const groups = new Map<string, number[]>();
  for (const x of rows) {
    if (x.doc.category === undefined) continue;
    const l = groups.get(x.doc.category) ?? [];
    l.push(x.score.score);
    groups.set(x.doc.category, l);
  }
  const out: Record<string, number> = {};
  for (const c of [...groups.keys()].sort()) out[`${key}/${c}`] = mean(groups.get(c)!);
  return out;
}

function meanOf(key: string) {
  return (rows: readonly { score: SampleScore; doc: EvalDoc }[]) => ({
    [key]: mean(rows.map((r) => r.score.score)),
    ...byCategory(key, rows),
  });
}

function needAnswers(doc: EvalDoc, metric: string): readonly string[] {
  if (!doc.answers.length) throw new Error(`${metric}: sample ${doc.id} has no reference answers`);
  return doc.answers;
}

/** The gold letter of a multiple-choice document. */
function goldLetter(doc: EvalDoc): string {
  const a = doc.answer ?? doc.answers[0];
  if (a === undefined) throw new Error(`mc_accuracy: sample ${doc.id} has no "answer"`);
  const t = a.trim();
  if (/^[A-Za-z]$/.test(t)) return t.toUpperCase();
  const i = doc.choices?.findIndex((c) => c.trim().toLowerCase() === t.toLowerCase()) ?? -1;
  if (i >= 0) return String.fromCharCode(65 + i);
  throw new Error(`mc_accuracy: sample ${doc.id}: answer "${a}" is neither a letter nor an option`);
}

interface Family {
  rules: readonly string[];
  make(rules: string | undefined): Pick<Metric, "score" | "aggregate">;
}

const FAMILIES: Record<string, Family> = {
  vqa_accuracy: {
    rules: ["vqav2", "textvqa", "official"],
    make: (r) => ({
      score: (p, d) => ({ score: vqaAccuracy(p, needAnswers(d, "vqa_accuracy"), r as VqaRules) }),
      aggregate: meanOf("vqa_accuracy"),
    }),
  },
  anls: {
    rules: [],
    make: () => ({
      score: (p, d) => ({ score: anls(p, needAnswers(d, "anls")) }),
      aggregate: meanOf("anls"),
    }),
  },
  mc_accuracy: {
    rules: ["robust", "scienceqa", "mmstar-strict"],
    make: (r) => ({
      score: (p, d) => {
        const res = scoreChoice(p, goldLetter(d), d.choices ?? d.numChoices ?? 4, r as ChoiceRules);
        return { score: res.correct ? 1 : 0, parsed: res.letter ?? "" };
      },
      aggregate: (rows) => {
        const out: Record<string, number> = meanOf("mc_accuracy")(rows);
        const cats = Object.keys(out).filter((k) => k.startsWith("mc_accuracy/"));
        if (cats.length) out.mc_accuracy_macro = mean(cats.map((k) => out[k]));
        return out;
      },
    }),
  },
  exact_match: {
    rules: ["gqa", "edges", "exact"],
    make: (r) => ({
      score: (p, d) => ({ score: exactMatch(p, needAnswers(d, "exact_match"), r as ExactRules) }),
      aggregate: meanOf("exact_match"),
    }),
  },
  relaxed_accuracy: {
    rules: [],
    make: () => ({
      score: (p, d) => ({ score: relaxedAccuracy(p, needAnswers(d, "relaxed_accuracy")) }),
      aggregate: meanOf("relaxed_accuracy"),
    }),
  },
  yes_no: {
    rules: ["exact", "pope"],
    make: (r) => ({
      score: (p, d) => {
        const pred = parseYesNo(p, r as YesNoRules);
        const ref = referenceYesNo(needAnswers(d, "yes_no")[0]);
        return { score: pred === ref ? 1 : 0, parsed: pred };
      },
      aggregate: (rows) => {
        const s = yesNoStats(rows.map((x) => ({
          pred: x.score.parsed as "yes" | "no",
          ref: referenceYesNo(x.doc.answers[0]),
        })));
        return {
          yes_no_accuracy: s.accuracy,
          yes_no_precision: s.precision,
          yes_no_recall: s.recall,
          yes_no_f1: s.f1,
          yes_no_yes_ratio: s.yes_ratio,
          ...byCategory("yes_no_accuracy", rows),
        };
      },
    }),
  },
};

/** Known metric names. */
export const METRIC_NAMES: readonly string[] = Object.keys(FAMILIES);

/** The rules a metric accepts ([] when it has none). */
export function metricRules(name: string): readonly string[] {
  return FAMILIES[name]?.rules ?? [];
}

/** A metric from its spec ("name" or "name:rules"); unknown names or rules throw. */
export function parseMetric(spec: string): Metric {
  const [name, rules, ...extra] = spec.trim().split(":");
  const fam = FAMILIES[name];
  if (!fam || extra.length) {
    throw new Error(`unknown metric "${spec}" (known: ${METRIC_NAMES.join(", ")})`);
  }
  if (rules !== undefined && !fam.rules.includes(rules)) {
    throw new Error(
      fam.rules.length
        ? `metric ${name}: unknown rules "${rules}" (known: ${fam.rules.join(", ")})`
        : `metric ${name} takes no rules (got "${rules}")`,
    );
  }
  const r = rules ?? fam.rules[0];
  return { spec: r ? `${name}:${r}` : name, name, rules: r, ...fam.make(r) };
}
