// Tokenizer (the real Qwen byte-level BPE), chat templates and the SiQ-VL processor's prompt
// layout and labels.

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  ChatTemplate,
  loadChatTemplateSource,
  SIQVL_CHAT_TEMPLATE,
} from "../src/data/chat_template.ts";
import { labelSpans, renderLabeled } from "../src/data/inspect.ts";
import { IGNORE_INDEX, SiqvlProcessor } from "../src/data/processor.ts";
import { TextTokenizer } from "../src/data/tokenizer.ts";
import {
  QWEN25_TOKENIZER_CONFIG,
  qwenTokenizer,
  qwenTokenizerJson,
} from "./fixtures/data/qwen_tokenizer.ts";

const tok = await qwenTokenizer();

const SPECIAL: Record<string, number> = {
  "<|endoftext|>": 151643,
  "<|im_start|>": 151644,
  "<|im_end|>": 151645,
  "<|object_ref_start|>": 151646,
  "<|object_ref_end|>": 151647,
  "<|box_start|>": 151648,
  "<|box_end|>": 151649,
  "<|quad_start|>": 151650,
  "<|quad_end|>": 151651,
  "<|vision_start|>": 151652,
  "<|vision_end|>": 151653,
  "<|vision_pad|>": 151654,
  "<|image_pad|>": 151655,
  "<|video_pad|>": 151656,
};

Deno.test("tokenizer: Qwen2.5 special ids, eos/pad, vocabulary size", () => {
  for (const [t, id] of Object.entries(SPECIAL)) {
    assert.equal(tok.tokenToId(t), id, t);
    assert.equal(tok.idToToken(id), t);
    assert.ok(tok.isSpecial(id), `${t} is special`);
    assert.deepEqual(tok.encode(t), [id], `${t} encodes atomically`);
  }
  assert.equal(tok.vocabSize, 151665);
  assert.equal(tok.eosId, 151645);
  assert.equal(tok.padId, 151643);
  assert.ok(!tok.isSpecial(151657), "<tool_call> is an added, non-special token");
  assert.deepEqual(tok.encode("\n"), [198]);
  assert.deepEqual(tok.encode("assistant"), [77091]);
  assert.deepEqual(tok.encode("user"), [872]);
  assert.deepEqual(tok.encode("system"), [8948]);
  assert.deepEqual(tok.encode("\n\n"), [271]);
});

Deno.test("tokenizer: special tokens stay atomic inside text, digits split", () => {
  const ids = tok.encode("a<|im_start|>b<|image_pad|><|image_pad|>c<|im_end|>");
  assert.deepEqual(ids.filter((i) => i >= 151643), [151644, 151655, 151655, 151645]);
  // Qwen's pre-tokenizer splits numbers into single digits.
  assert.deepEqual(tok.encode("2025").map((i) => tok.decode([i])), ["2", "0", "2", "5"]);
  // A near-miss of a special token is ordinary text.
  assert.ok(tok.encode("<|im_start|").every((i) => i < 151643));
});

Deno.test("tokenizer: round trips, including tricky unicode", () => {
  const texts = [
    "Hello world",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\r\n\n\n",
    "Ünïcödé — naïve café, Straße",
    "日本語のテキストと中文文本",
    "emoji 🎉👩‍👩‍👧‍👦 flags 🇫🇷 skin 👍🏽",
    "combining e\u0301 vs \u00e9", // NFC composes e + ́ to é
    "RTL: שלום עולם مرحبا",
    "math ∑∫√∞ ≤≥ and zero-width\u200bspace",
    "<image>\nWhat is <b>this</b>?",
    "it's, we're, I'LL, they'VE",
  ];
  for (const t of texts) {
    const ids = tok.encode(t);
    assert.equal(tok.decode(ids), t.normalize("NFC"), JSON.stringify(t));
    const lens = tok.tokenByteLengths(ids);
    const bytes = new TextEncoder().encode(t.normalize("NFC")).length;
    assert.equal(lens.reduce((a, b) => a + b, 0), bytes, `byte lengths of ${JSON.stringify(t)}`);
  }
  assert.equal(tok.decode([]), "");
  assert.throws(() => tok.decode([999999]), /outside the vocabulary/);
});

Deno.test("tokenizer: decode with skipSpecialTokens drops only special tokens", () => {
  const ids = tok.encode("<|im_start|>assistant\nThe <tool_call> cat<|im_end|><|endoftext|>");
  assert.equal(
    tok.decode(ids),
    "<|im_start|>assistant\nThe <tool_call> cat<|im_end|><|endoftext|>",
  );
  assert.equal(tok.decode(ids, { skipSpecialTokens: true }), "assistant\nThe <tool_call> cat");
});

Deno.test("tokenizer: loads from a directory and rejects a broken tokenizer.json", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(
      join(dir, "tokenizer.json"),
      JSON.stringify(await qwenTokenizerJson()),
    );
    await Deno.writeTextFile(
      join(dir, "tokenizer_config.json"),
      JSON.stringify(QWEN25_TOKENIZER_CONFIG),
    );
    const t = await TextTokenizer.fromDir(dir);
    assert.equal(t.eosId, 151645);
    assert.deepEqual(t.encode("Hi there"), tok.encode("Hi there"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  assert.throws(() => new TextTokenizer({}), /missing `model`/);
});

Deno.test("chat template: SiQ-VL ChatML renders exactly", () => {
  const t = new ChatTemplate(SIQVL_CHAT_TEMPLATE);
  const msgs = [
    { role: "system", content: "S" },
    { role: "user", content: "Q" },
    { role: "assistant", content: "A" },
  ];
  assert.equal(
    t.render(msgs),
    "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n" +
      "<|im_start|>assistant\nA<|im_end|>\n",
  );
  assert.equal(
    t.render(msgs.slice(1, 2), { addGenerationPrompt: true }),
    "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n",
  );
  assert.throws(() => new ChatTemplate("{% for %}"), /does not parse/);
  const raising = new ChatTemplate("{{ raise_exception('no system role') }}");
  assert.throws(() => raising.render([]), /no system role/);
});

Deno.test("chat template: found in .jinja, chat_template.json, then tokenizer_config.json", async () => {
  const dir = await Deno.makeTempDir();
  try {
    assert.equal(await loadChatTemplateSource(dir), undefined);
    await Deno.writeTextFile(
      join(dir, "tokenizer_config.json"),
      JSON.stringify({
        chat_template: [{ name: "tool_use", template: "T" }, {
          name: "default",
          template: "C",
        }],
      }),
    );
    assert.equal(await loadChatTemplateSource(dir), "C");
    await Deno.writeTextFile(
      join(dir, "chat_template.json"),
      JSON.stringify({ chat_template: "J" }),
    );
    assert.equal(await loadChatTemplateSource(dir), "J");
    await Deno.writeTextFile(join(dir, "chat_template.jinja"), "K");
    assert.equal(await loadChatTemplateSource(dir), "K");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

const SYS = "You are a test assistant.";
const proc = new SiqvlProcessor({ tokenizer: tok, tokensPerImage: 4, imageSize: 32 });
const procSys = new SiqvlProcessor({
  tokenizer: tok,
  tokensPerImage: 3,
  imageSize: 32,
  systemPrompt: SYS,
});

Deno.test("processor: SiQ-VL training layout, token for token", () => {
  const enc = procSys.encode({ turns: [{ user: "What is it?", assistant: "A cat." }] });
  const pads = "<|image_pad|>".repeat(3);
  assert.equal(
    enc.text,
    `<|im_start|>system\n${SYS}<|im_end|>\n<|im_start|>user\n<|vision_start|>${pads}` +
      `<|vision_end|>\nWhat is it?<|im_end|>\n<|im_start|>assistant\nA cat.<|im_end|>\n`,
  );
  const ids = Array.from(enc.inputIds);
  assert.deepEqual(ids.slice(0, 3), [151644, 8948, 198]);
  const u = ids.indexOf(872);
  assert.deepEqual(ids.slice(u - 1, u + 7), [
    151644,
    872,
    198,
    151652,
    151655,
    151655,
    151655,
    151653,
  ]);
  assert.equal(ids[u + 7], 198, "newline after <|vision_end|>");
  const a = ids.indexOf(77091);
  assert.deepEqual(ids.slice(a - 1, a + 2), [151644, 77091, 198]);
  assert.deepEqual(ids.slice(-2), [151645, 198]);
  // Labels: exactly "A cat." and the <|im_end|> after it.
  assert.deepEqual(labelSpans(tok, enc.inputIds, enc.labels!), ["A cat.<|im_end|>"]);
  const firstLabel = enc.labels!.findIndex((l) => l !== IGNORE_INDEX);
  assert.equal(firstLabel, a + 2);
  assert.equal(enc.labels![ids.length - 1], IGNORE_INDEX, "trailing newline not trained");
  assert.equal(enc.labels![ids.length - 2], 151645, "<|im_end|> trained");
});

Deno.test("processor: <image> marker is replaced in place; default question", () => {
  const enc = proc.encode({ turns: [{ user: "Look: <image> what now?", assistant: "Ok" }] });
  assert.ok(
    enc.text.includes(`Look: <|vision_start|>${"<|image_pad|>".repeat(4)}<|vision_end|> what now?`),
  );
  assert.ok(!enc.text.includes("<image>"));
  const dflt = proc.encode({ turns: [{ user: "  ", assistant: "Ok" }] });
  assert.ok(dflt.text.includes("<|vision_end|>\nDescribe this image.<|im_end|>"));
  assert.throws(
    () => proc.encode({ turns: [{ user: "<image><image>", assistant: "x" }] }),
    /2 <image> markers but one image/,
  );
  assert.throws(() => proc.encode({ turns: [] }), /no turns/);
});

Deno.test("processor: multi-turn labels cover every answer and its <|im_end|>", () => {
  const enc = proc.encode({
    turns: [
      { user: "<image>\nQ1?", assistant: "First answer." },
      { user: "Q2?", assistant: "\n\nSecond, with leading newlines." },
      { user: "Q3 ünï?", assistant: "Третий ответ 🎉" },
    ],
  });
  assert.deepEqual(labelSpans(tok, enc.inputIds, enc.labels!), [
    "First answer.<|im_end|>",
    // "\n" of the header and the answer's "\n\n" merge into one token, which carries answer
    // bytes and is therefore trained.
    "\n\n\nSecond, with leading newlines.<|im_end|>",
    "Третий ответ 🎉<|im_end|>",
  ]);
  const shown = renderLabeled(tok, enc.inputIds, enc.labels!);
  assert.equal(
    shown,
    "<|im_start|>user\n<|vision_start|><|image_pad|>×4<|vision_end|>\nQ1?<|im_end|>\n" +
      "<|im_start|>assistant\n⟦First answer.<|im_end|>⟧\n<|im_start|>user\nQ2?<|im_end|>\n" +
      "<|im_start|>assistant⟦\n\n\nSecond, with leading newlines.<|im_end|>⟧\n" +
      "<|im_start|>user\nQ3 ünï?<|im_end|>\n<|im_start|>assistant\n⟦Третий ответ 🎉<|im_end|>⟧\n",
  );
  // No image pad, system or user token is ever labelled.
  for (let i = 0; i < enc.inputIds.length; i++) {
    if (enc.labels![i] !== IGNORE_INDEX) assert.notEqual(enc.inputIds[i], 151655);
  }
});

Deno.test("processor: generation prompt ends with the assistant header", () => {
  const p = procSys.encodePrompt("Where?");
  assert.ok(p.text.endsWith(
    "<|im_start|>user\n<|vision_start|><|image_pad|><|image_pad|>" +
      "<|image_pad|><|vision_end|>\nWhere?<|im_end|>\n<|im_start|>assistant\n",
  ));
  assert.deepEqual(Array.from(p.inputIds.slice(-3)), [151644, 77091, 198]);
  assert.equal(p.labels, undefined);
  const h = proc.encodePrompt("And now?", [{ user: "<image>\nFirst?", assistant: "Yes." }]);
  assert.ok(h.text.includes("Yes.<|im_end|>\n<|im_start|>user\nAnd now?<|im_end|>\n"));
  assert.equal(h.text.split("<|vision_start|>").length, 2, "one image placeholder");
});

Deno.test("processor: a checkpoint template is used, and labels follow it", () => {
  // A Qwen2.5-style template that injects a default system prompt.
  const qwenStyle = "{%- if messages[0]['role'] != 'system' %}" +
    "{{- '<|im_start|>system\\nYou are Qwen.<|im_end|>\\n' }}{%- endif %}" +
    "{%- for m in messages %}{{- '<|im_start|>' + m.role + '\\n' + m.content | trim + " +
    "'<|im_end|>\\n' }}{%- endfor %}" +
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";
  const p = new SiqvlProcessor({
    tokenizer: tok,
    tokensPerImage: 1,
    imageSize: 16,
    chatTemplate: qwenStyle,
  });
  const enc = p.encode({ turns: [{ user: "Hi", assistant: "Hello there" }] });
  assert.ok(enc.text.startsWith("<|im_start|>system\nYou are Qwen.<|im_end|>\n"));
  assert.deepEqual(labelSpans(tok, enc.inputIds, enc.labels!), ["Hello there<|im_end|>"]);
  // A template that drops assistant turns cannot be trained on.
  const dropping = new SiqvlProcessor({
    tokenizer: tok,
    tokensPerImage: 1,
    imageSize: 16,
    chatTemplate: "{% for m in messages %}{% if m.role == 'user' %}{{ m.content }}{% endif %}" +
      "{% endfor %}",
  });
  assert.throws(
    () => dropping.encode({ turns: [{ user: "Hi", assistant: "Hello" }] }),
    /does not render assistant turn 0/,
  );
});

Deno.test("processor: fromPretrained reads processor_config and preprocessor_config", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(
      join(dir, "tokenizer.json"),
      JSON.stringify(await qwenTokenizerJson()),
    );
    await Deno.writeTextFile(
      join(dir, "tokenizer_config.json"),
      JSON.stringify({ ...QWEN25_TOKENIZER_CONFIG, chat_template: SIQVL_CHAT_TEMPLATE }),
    );
    // A bare LM directory: no processor_config → SiQ-VL's template, sizes from options.
    await assert.rejects(SiqvlProcessor.fromPretrained(dir), /no image size/);
    const bare = await SiqvlProcessor.fromPretrained(dir, { imageSize: 32, tokensPerImage: 4 });
    assert.equal(bare.template.source, SIQVL_CHAT_TEMPLATE);
    assert.equal(bare.systemPrompt, undefined);
    await Deno.writeTextFile(
      join(dir, "processor_config.json"),
      JSON.stringify({
        vit_image_size: 224,
        vit_patch_size: 16,
        pixel_shuffle_factor: 2,
        system_prompt: "From the config.",
      }),
    );
    await Deno.writeTextFile(
      join(dir, "preprocessor_config.json"),
      JSON.stringify({ size: { height: 224, width: 224 }, resample: 2 }),
    );
    const p = await SiqvlProcessor.fromPretrained(dir);
    assert.equal(p.tokensPerImage, 49);
    assert.equal(p.image.size, 224);
    assert.equal(p.image.resample, 2);
    assert.equal(p.systemPrompt, "From the config.");
    const enc = p.encode({ turns: [{ user: "Q", assistant: "A" }] });
    assert.ok(enc.text.startsWith("<|im_start|>system\nFrom the config.<|im_end|>\n"));
    assert.equal(enc.inputIds.filter((i) => i === 151655).length, 49);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
