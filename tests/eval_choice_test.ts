// The multiple-choice extractor on free-text phrasings, and lmms-eval's ScienceQA and strict
// MMStar letter rules.

import assert from "node:assert/strict";
import { extractChoice, optionLetters, scoreChoice } from "../src/eval/choice.ts";

const OPTIONS = ["cat", "dog", "bird", "fish"];

// [reply, expected letter (undefined: no option identified)]
const CASES: [string, string | undefined][] = [
  ["B", "B"],
  ["b", "B"],
  ["(B)", "B"],
  ["[C]", "C"],
  ["B.", "B"],
  ["C.", "C"],
  ["B. dog", "B"],
  ["(B) dog", "B"],
  ["B) dog", "B"],
  ["B: dog", "B"],
  ["B, the dog", "B"],
  ["C is correct", "C"],
  ["C\nBecause it has feathers.", "C"],
  ["The answer is B", "B"],
  ["The answer is B.", "B"],
  ["The answer is (C).", "C"],
  ["The answer is: B", "B"],
  ["Answer: D", "D"],
  ["answer: d", "D"],
  ["Final answer: A", "A"],
  ["The correct option is C", "C"],
  ["Option C", "C"],
  ["I think the answer is C", "C"],
  ["The image shows a fish, so the answer is D", "D"],
  ["It's D.", "D"],
  ["**C**", "C"],
  ["答案是C", "C"],
  ["The dog (B) is on the left", "B"],
  ["Between A and B, I choose B", "B"],
  ["dog", "B"],
  ["Dog.", "B"],
  ["It is a dog.", "B"],
  ["(b) dog", "B"],
  ["A cat is sitting on the mat", "A"],
  ["A bird", "C"],
  ["Neither cat nor dog: a bird", "C"],
  ["E", undefined],
  ["", undefined],
  ["I don't know", undefined],
];

Deno.test(`mc extractor: ${CASES.length} phrasings`, () => {
  assert.ok(CASES.length >= 30);
  for (const [reply, want] of CASES) {
    const got = extractChoice(reply, OPTIONS);
    assert.equal(got.letter, want, `${JSON.stringify(reply)} → ${got.letter} (${got.how})`);
  }
});

Deno.test("mc extractor: letters only (options embedded in the question)", () => {
  assert.equal(extractChoice("The answer is C", 4).letter, "C");
  assert.equal(extractChoice("E", 5).letter, "E");
  assert.equal(extractChoice("E", 4).letter, undefined);
  assert.deepEqual(optionLetters(3), ["A", "B", "C"]);
  assert.throws(() => optionLetters(0), /0 options/);
});

Deno.test("mc rules: lmms-eval ScienceQA and strict MMStar", () => {
  const sqa = (r: string) => scoreChoice(r, "B", OPTIONS, "scienceqa").correct;
  assert.equal(sqa("B"), true);
  assert.equal(sqa(" b "), true);
  assert.equal(sqa("B. dog"), true);
  assert.equal(sqa("C. bird"), false);
  assert.equal(sqa("(B)"), false);
  assert.equal(sqa("The answer is B"), false);
  const strict = (r: string) => scoreChoice(r, "B", 4, "mmstar-strict").correct;
  assert.equal(strict("B"), true);
  assert.equal(strict("b) dog"), true);
  assert.equal(strict("(B) dog"), true);
  assert.equal(strict("Option B"), true);
  assert.equal(strict("The answer is B"), true);
  assert.equal(strict("Answer: B"), false);
  assert.equal(strict("Because"), true); // the first character is "b": the rule's leniency
  assert.equal(strict(""), false);
});
