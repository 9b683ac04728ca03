// Evaluation metrics on hand-worked cases from the reference rules (lmms-eval, the official
// VQA tool, POPE, ChartQA), including the awkward ones.

import assert from "node:assert/strict";
import { anls, levenshtein } from "../src/eval/anls.ts";
import { exactMatch } from "../src/eval/exact.ts";
import { parseMetric } from "../src/eval/metrics.ts";
import { pythonFloat, relaxedCorrectness } from "../src/eval/relaxed.ts";
import { vqaAccuracy } from "../src/eval/vqa.ts";
import {
  evalAiNormalize,
  processDigitArticle,
  processPunctuation,
  vqaNormalize,
} from "../src/eval/vqa_normalize.ts";
import { parseYesNo, yesNoStats } from "../src/eval/yesno.ts";

const ten = (a: string) => Array(10).fill(a);
const close = (a: number, b: number) => assert.ok(Math.abs(a - b) < 1e-12, `${a} vs ${b}`);

Deno.test("vqa normaliser: numbers, articles, contractions, punctuation", () => {
  assert.equal(vqaNormalize("Two"), "2");
  assert.equal(vqaNormalize("none"), "0");
  assert.equal(vqaNormalize("a dog"), "dog");
  assert.equal(vqaNormalize("The  Red   Car"), "red car");
  assert.equal(vqaNormalize("dont"), "don't");
  assert.equal(vqaNormalize("somebody'd"), "somebodyd"); // the reference table's quirk
  assert.equal(vqaNormalize("yes."), "yes");
  assert.equal(vqaNormalize("Yes, it is"), "yes it is"); // ", " → the comma is deleted
  assert.equal(vqaNormalize("t-shirt"), "t shirt"); // no space next to it → a space
  assert.equal(vqaNormalize("1,000"), "1000"); // digit,digit → marks deleted, not spaced
  assert.equal(vqaNormalize("3.5"), "3.5"); // a period before a digit stays
  assert.equal(vqaNormalize("5."), "5");
  assert.equal(vqaNormalize("it's"), "it's"); // ' is not in lmms-eval's list
  assert.equal(processPunctuation("it's", "official"), "it s"); // but in the official one
  assert.equal(processDigitArticle("dont", "official"), "don\u2019t");
  // At most 32 periods go (re.sub with count = re.UNICODE = 32).
  assert.equal(processPunctuation(".".repeat(40)), "........");
  // TextVQA's full processor: ',' and '?' removed, "'s" split off.
  assert.equal(evalAiNormalize("Coca-Cola's?"), "coca cola 's");
});

Deno.test("vqa accuracy: leave-one-out min(n/3, 1), duplicates, awkward cases", () => {
  assert.equal(vqaAccuracy("two", ten("2")), 1);
  assert.equal(vqaAccuracy("2", ten("two")), 1);
  assert.equal(vqaAccuracy("a dog", ten("dog")), 1);
  assert.equal(vqaAccuracy("its", ten("it's")), 0);
  assert.equal(vqaAccuracy("1,000", ten("1000")), 1);
  assert.equal(vqaAccuracy("", ten("yes")), 0);
  // Official: "it's" becomes "it s" in the prediction, while 10 identical answers stay raw.
  assert.equal(vqaAccuracy("it's", ten("it's"), "official"), 0);
  assert.equal(vqaAccuracy("it's", ten("it's"), "vqav2"), 1);
  // 3 of 10 annotators: 7 subsets with 3 matches (1) + 3 with 2 (2/3) → 0.9.
  const three = ["red", "red", "red", "blue", "blue", "blue", "blue", "green", "pink", "gray"];
  close(vqaAccuracy("red", three), 0.9);
  close(vqaAccuracy("blue", three), 1); // 4 annotators
  close(vqaAccuracy("green", three), 0.3); // 1 annotator: 9 subsets × 1/3 / 10
  close(vqaAccuracy("Pink.", three), 0.3);
  const two = ["cat", "cat", "dog", "dog", "dog", "dog", "dog", "dog", "dog", "dog"];
  close(vqaAccuracy("cat", two), 0.6); // 8 × 2/3 + 2 × 1/3 = 6 → 0.6
  assert.equal(vqaAccuracy("anything", ["anything"]), 0); // one answer: empty subsets
  close(vqaAccuracy("Coca Cola's", ten("coca-cola's"), "textvqa"), 1);
});

Deno.test("anls: threshold, max over references, raw-length quirk, empty", () => {
  assert.equal(levenshtein("kitten", "sitting"), 3);
  assert.equal(levenshtein("", "abc"), 3);
  assert.equal(anls("Hello", ["hello "]), 1);
  close(anls("helo", ["hello"]), 0.8);
  assert.equal(anls("abc", ["xyz"]), 0);
  close(anls("ab", ["abcd"]), 0.5); // exactly τ is kept
  assert.equal(anls("a", ["abcd"]), 0); // 0.25 < τ
  assert.equal(anls("hello", ["xyz", "hello"]), 1);
  // Distance on collapsed strings (1 edit), length on the raw ones (13, not 12).
  close(anls("hello   world", ["hello world!"]), 1 - 1 / 13);
  assert.equal(anls("", ["abc"]), 0);
  assert.equal(anls("", [""]), 1);
});

Deno.test("exact match (GQA), relaxed accuracy (ChartQA)", () => {
  assert.equal(exactMatch(" Yes. ", ["yes"]), 1);
  assert.equal(exactMatch("t-shirt", ["tshirt"]), 1);
  assert.equal(exactMatch("the dog", ["dog"]), 0); // no article rule in GQA
  assert.equal(exactMatch("two", ["2"]), 0);
  assert.equal(exactMatch("", ["yes"]), 0);
  assert.equal(exactMatch("(Red)", ["red"], "edges"), 1);
  assert.equal(relaxedCorrectness("10.4", "10"), 1);
  assert.equal(relaxedCorrectness("10.6", "10"), 0);
  assert.equal(relaxedCorrectness("5%", "0.05"), 1);
  assert.equal(relaxedCorrectness("0", "0"), 1); // zero target: string comparison
  assert.equal(relaxedCorrectness("0.0", "0"), 0);
  assert.equal(relaxedCorrectness("Yes", "yes"), 1);
  assert.equal(relaxedCorrectness("1,000", "1000"), 0); // float("1,000") fails in Python too
  assert.equal(relaxedCorrectness("1_000", "1000"), 1);
  assert.equal(relaxedCorrectness("", "3"), 0);
  assert.equal(pythonFloat(" 1e3 "), 1000);
  assert.equal(pythonFloat("1."), 1);
  assert.equal(pythonFloat("-inf"), -Infinity);
  assert.equal(pythonFloat("1.2.3"), undefined);
});

Deno.test("yes/no: lmms-eval exact and POPE parsing, precision/recall/F1", () => {
  assert.equal(parseYesNo("Yes"), "yes");
  assert.equal(parseYesNo("Yes."), "no"); // lmms-eval: only exactly "yes" is yes
  assert.equal(parseYesNo("Yes.", "pope"), "yes");
  assert.equal(parseYesNo("No, there is not.", "pope"), "no");
  assert.equal(parseYesNo("There is no dog in the image", "pope"), "no");
  assert.equal(parseYesNo("", "pope"), "yes");
  const s = yesNoStats([
    { pred: "yes", ref: "yes" },
    { pred: "yes", ref: "no" },
    { pred: "no", ref: "yes" },
    { pred: "no", ref: "no" },
    { pred: "yes", ref: "yes" },
  ]);
  close(s.accuracy, 0.6);
  close(s.precision, 2 / 3);
  close(s.recall, 2 / 3);
  close(s.f1, 2 / 3);
  close(s.yes_ratio, 0.6);
  assert.equal(yesNoStats([{ pred: "no", ref: "no" }]).f1, 0);
});

Deno.test("metric registry: specs, rules, aggregates, errors", () => {
  assert.equal(parseMetric("vqa_accuracy").spec, "vqa_accuracy:vqav2");
  assert.throws(() => parseMetric("bleu"), /unknown metric "bleu"/);
  assert.throws(() => parseMetric("vqa_accuracy:foo"), /unknown rules "foo"/);
  assert.throws(() => parseMetric("anls:x"), /takes no rules/);
  const mc = parseMetric("mc_accuracy");
  const docs = [
    { id: "1", answers: [], answer: "A", category: "x" },
    { id: "2", answers: [], answer: "B", category: "x" },
    { id: "3", answers: [], answer: "C", category: "y" },
  ];
  const preds = ["A", "A", "C"];
  const agg = mc.aggregate(docs.map((d, i) => ({ doc: d, score: mc.score(preds[i], d) })));
  close(agg.mc_accuracy, 2 / 3);
  close(agg["mc_accuracy/x"], 0.5);
  close(agg["mc_accuracy/y"], 1);
  close(agg.mc_accuracy_macro, 0.75); // macro ≠ micro
  const yn = parseMetric("yes_no");
  assert.throws(() => yn.score("yes", { id: "q", answers: ["maybe"] }), /not yes or no/);
  assert.throws(() => parseMetric("anls").score("x", { id: "q", answers: [] }), /no reference/);
});
