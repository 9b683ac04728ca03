// Answer normalisation of the VQA evaluation (VQAv2, TextVQA, VizWiz), in two profiles:
//
//   lmms-eval  EvalAIAnswerProcessor (tasks/_task_utils/vqa_eval_metric.py, from MMF/EvalAI)
//   official   GT-Vision-Lab/VQA PythonEvaluationTools/vqaEvaluation/vqaEval.py
//
// Steps (each profile's own tables):
//   1. tokenize (TextVQA only): lower case; delete "," and "?"; "'s" → " 's"; strip
//   2. "\n" and "\t" → " ", strip
//   3. punctuation: every mark p of the list is deleted when "p " or " p" occurs in the
//      (original) text or the text has a digit-comma-digit match, else replaced by a space; then
//      periods not followed by a digit are deleted — at most 32 of them (the reference passes
//      re.UNICODE, 32, as the `count` argument of re.sub). The reference's period pattern
//      `(?!<=\d)(\.)(?!\d)` is a mistyped lookbehind that never fires, so only "(?!\d)" acts.
//   4. digits and articles: lower case, split on whitespace, number words none/zero…ten → 0…10,
//      drop a/an/the, expand contractions from the table below, join with single spaces.

/** Which reference implementation's rules to follow. */
export type VqaProfile = "lmms-eval" | "official";

const PUNCT: Record<VqaProfile, readonly string[]> = {
  "lmms-eval": [
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
  ],
  official: [
    ";",
    ":",
    "/",
    "'",
    "[",
    "]",
    '"',
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
  ],
};

/** Digit-comma-digit: lmms-eval `(?<=\d)(\,)+(?=\d)`, official `(\d)(\,)(\d)`. */
const COMMA: Record<VqaProfile, RegExp> = {
  "lmms-eval": /(?<=\d),+(?=\d)/,
  official: /\d,\d/,
};

const NUMBER_WORDS: Record<string, string> = {
  none: "0",
  zero: "0",
  one: "1",
  two: "2",
  three: "3",
  four: "4",
  five: "5",
  six: "6",
  seven: "7",
  eight: "8",
  nine: "9",
  ten: "10",
};

const ARTICLES = new Set(["a", "an", "the"]);

// Contractions written without apostrophes → with. Keys and values are the reference table's,
// including its quirks (capitalised keys that never match after lower-casing, and
// "somebody'd" → "somebodyd"). Written as "key=value" pairs to keep the table compact.
const CONTRACTION_PAIRS = (
  "aint=ain't arent=aren't cant=can't couldve=could've couldnt=couldn't " +
  "couldn'tve=couldn't've couldnt've=couldn't've didnt=didn't doesnt=doesn't dont=don't " +
  "hadnt=hadn't hadnt've=hadn't've hadn'tve=hadn't've hasnt=hasn't havent=haven't hed=he'd " +
  "hed've=he'd've he'dve=he'd've hes=he's howd=how'd howll=how'll hows=how's Id've=I'd've " +
  "I'dve=I'd've Im=I'm Ive=I've isnt=isn't itd=it'd itd've=it'd've it'dve=it'd've " +
  "itll=it'll let's=let's maam=ma'am mightnt=mightn't mightnt've=mightn't've " +
  "mightn'tve=mightn't've mightve=might've mustnt=mustn't mustve=must've neednt=needn't " +
  "notve=not've oclock=o'clock oughtnt=oughtn't ow's'at='ow's'at 'ows'at='ow's'at " +
  "'ow'sat='ow's'at shant=shan't shed've=she'd've she'dve=she'd've she's=she's " +
  "shouldve=should've shouldnt=shouldn't shouldnt've=shouldn't've " +
  "shouldn'tve=shouldn't've somebody'd=somebodyd somebodyd've=somebody'd've " +
  "somebody'dve=somebody'd've somebodyll=somebody'll somebodys=somebody's " +
  "someoned=someone'd someoned've=someone'd've someone'dve=someone'd've " +
  "someonell=someone'll someones=someone's somethingd=something'd " +
  "somethingd've=something'd've something'dve=something'd've somethingll=something'll " +
  "thats=that's thered=there'd thered've=there'd've there'dve=there'd've therere=there're " +
  "theres=there's theyd=they'd theyd've=they'd've they'dve=they'd've theyll=they'll " +
  "theyre=they're theyve=they've twas='twas wasnt=wasn't wed've=we'd've we'dve=we'd've " +
  "weve=we've werent=weren't whatll=what'll whatre=what're whats=what's whatve=what've " +
  "whens=when's whered=where'd wheres=where's whereve=where've whod=who'd " +
  "whod've=who'd've who'dve=who'd've wholl=who'll whos=who's whove=who've whyll=why'll " +
  "whyre=why're whys=why's wont=won't wouldve=would've wouldnt=wouldn't " +
  "wouldnt've=wouldn't've wouldn'tve=wouldn't've yall=y'all yall'll=y'all'll " +
  "y'allll=y'all'll yall'd've=y'all'd've y'alld've=y'all'd've y'all'dve=y'all'd've " +
  "youd=you'd youd've=you'd've you'dve=you'd've youll=you'll youre=you're youve=you've"
).split(" ").map((p) => p.split("=") as [string, string]);

/** The contractions table (the official tool writes the values with ’ instead of '). */
export const CONTRACTIONS: Record<VqaProfile, ReadonlyMap<string, string>> = {
  "lmms-eval": new Map(CONTRACTION_PAIRS),
  official: new Map(CONTRACTION_PAIRS.map(([k, v]) => [k, v.replaceAll("'", "\u2019")])),
};

/** Python's str.split() with no argument: runs of whitespace, no empty pieces. */
function pySplit(s: string): string[] {
  // deno-lint-ignore no-control-regex -- Python counts \x1c–\x1f as whitespace
  return s.split(/[\s\x1c-\x1f]+/).filter((w) => w.length > 0);
}

/** Step 3: punctuation marks, then periods not followed by a digit (at most 32). */
export function processPunctuation(text: string, profile: VqaProfile = "lmms-eval"): string {
  let out = text;
  const commaNumber = COMMA[profile].test(text);
  for (const p of PUNCT[profile]) {
    if (text.includes(p + " ") || text.includes(" " + p) || commaNumber) {
      out = out.replaceAll(p, "");
    } else out = out.replaceAll(p, " ");
  }
  let removed = 0;
  return out.replace(/\.(?!\d)/g, (m) => (removed++ < 32 ? "" : m));
}

/** Step 4: number words → digits, articles dropped, contractions expanded. */
export function processDigitArticle(text: string, profile: VqaProfile = "lmms-eval"): string {
  const table = CONTRACTIONS[profile];
  const words: string[] = [];
  for (const w of pySplit(text.toLowerCase())) {
    const word = NUMBER_WORDS[w] ?? w;
    if (!ARTICLES.has(word)) words.push(word);
  }
  return words.map((w) => table.get(w) ?? w).join(" ");
}

/** Step 1 (TextVQA's full processor only). */
export function wordTokenize(text: string): string {
  return text.toLowerCase().replaceAll(",", "").replaceAll("?", "").replaceAll("'s", " 's")
    .trim();
}

/** Step 2. */
export function stripWhitespace(text: string): string {
  return text.replaceAll("\n", " ").replaceAll("\t", " ").trim();
}

/** The full EvalAI processor (steps 1–4), as lmms-eval's TextVQA applies to both sides. */
export function evalAiNormalize(text: string): string {
  return processDigitArticle(processPunctuation(stripWhitespace(wordTokenize(text))));
}

/** Steps 3–4 after whitespace cleanup, as lmms-eval's VQAv2 applies to both sides. */
export function vqaNormalize(text: string, profile: VqaProfile = "lmms-eval"): string {
  return processDigitArticle(processPunctuation(stripWhitespace(text), profile), profile);
}
