// A small byte-level BPE tokenizer in Hugging Face `tokenizer.json` format, trained on a corpus
// (the demo's questions and answers), with the Qwen chat special tokens appended after the
// regular vocabulary — the same pipeline as Qwen2.5 (Qwen's Split regex, ByteLevel without
// prefix space, ByteLevel decoder), just a vocabulary of a few hundred ids instead of 151,643.
//
// Vocabulary: the 256 byte symbols (GPT-2 byte→unicode table) in byte order, then one token per
// merge in merge order, then the special tokens. Training is plain BPE: repeatedly merge the most
// frequent adjacent pair of the word-frequency table (ties → the lexicographically smallest pair)
// until `maxMerges` or no pair occurs twice.

/** Qwen2.5's pre-tokenizer regex (FACTS §3.4). */
export const QWEN_SPLIT_REGEX =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/** The Qwen2.5 special tokens, in Qwen's order (ids are assigned after the regular vocab). */
export const QWEN_SPECIAL_TOKENS = [
  "<|endoftext|>",
  "<|im_start|>",
  "<|im_end|>",
  "<|object_ref_start|>",
  "<|object_ref_end|>",
  "<|box_start|>",
  "<|box_end|>",
  "<|quad_start|>",
  "<|quad_end|>",
  "<|vision_start|>",
  "<|vision_end|>",
  "<|vision_pad|>",
  "<|image_pad|>",
  "<|video_pad|>",
] as const;

/** GPT-2's byte → printable unicode character table. */
export function bytesToUnicode(): string[] {
  const bs: number[] = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n++);
    }
  }
  const table = new Array<string>(256);
  bs.forEach((b, i) => (table[b] = String.fromCodePoint(cs[i])));
  return table;
}

/** Split text the way Qwen's pre-tokenizer does (JS regex with the unicode flag). */
export function preTokenize(text: string): string[] {
  // JS has no inline (?i:...) groups: expand the contraction alternatives case-insensitively.
  const src = QWEN_SPLIT_REGEX.replace(
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)",
    "'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD]",
  );
  return text.normalize("NFC").match(new RegExp(src, "gu")) ?? [];
}

/** Options for {@link trainByteLevelBpe}. */
export interface SmallTokenizerOptions {
  /** Upper bound on merges (vocabulary = 256 + merges + specials). Default 2000. */
  maxMerges?: number;
  /** Special tokens appended after the vocabulary (default: the Qwen2.5 set). */
  specialTokens?: readonly string[];
  /** Minimum pair frequency for a merge. Default 2. */
  minFrequency?: number;
}

/** The trained tokenizer: `tokenizer.json` content and the special-token ids. */
export interface SmallTokenizer {
  tokenizerJson: Record<string, unknown>;
  /** Regular vocabulary size (bytes + merges). */
  baseVocabSize: number;
  /** Total ids (base + specials). */
  vocabSize: number;
  specialIds: Record<string, number>;
}

/** Train a byte-level BPE on `corpus` and return it in HF tokenizer.json form. */
export function trainByteLevelBpe(
  corpus: string[],
  opts: SmallTokenizerOptions = {},
): SmallTokenizer {
  const maxMerges = opts.maxMerges ?? 2000;
  const minFreq = opts.minFrequency ?? 2;
  const specials = opts.specialTokens ?? QWEN_SPECIAL_TOKENS;
  const b2u = bytesToUnicode();
  const enc = new TextEncoder();
  // Word frequencies; each word as a list of symbols.
  const freq = new Map<string, number>();
  for (const text of corpus) {
    for (const w of preTokenize(text)) {
      const mapped = [...enc.encode(w)].map((b) => b2u[b]).join("");
      freq.set(mapped, (freq.get(mapped) ?? 0) + 1);
    }
  }
  const words: { syms: string[]; n: number }[] = [...freq.entries()]
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
    .map(([w, n]) => ({ syms: [...w], n }));
  const vocab: Record<string, number> = {};
  b2u.forEach((c, i) => (vocab[c] = i));
  const merges: string[] = [];
  while (merges.length < maxMerges) {
    const pairs = new Map<string, number>();
    for (const { syms, n } of words) {
      for (let i = 0; i + 1 < syms.length; i++) {
        const k = syms[i] + " " + syms[i + 1];
        pairs.set(k, (pairs.get(k) ?? 0) + n);
      }
    }
    let best: string | null = null, bestN = 0;
    for (const [k, n] of pairs) {
      if (n > bestN || (n === bestN && best !== null && k < best)) [best, bestN] = [k, n];
    }
    if (best === null || bestN < minFreq) break;
    const [a, b] = best.split(" ");
    const merged = a + b;
    if (vocab[merged] === undefined) vocab[merged] = Object.keys(vocab).length;
    merges.push(best);
    for (const w of words) {
      const s = w.syms;
      const out: string[] = [];
      for (let i = 0; i < s.length; i++) {
        if (i + 1 < s.length && s[i] === a && s[i + 1] === b) {
          out.push(merged);
          i++;
        } else out.push(s[i]);
      }
      w.syms = out;
    }
  }
  const base = Object.keys(vocab).length;
  const specialIds: Record<string, number> = {};
  const added = specials.map((content, i) => {
    specialIds[content] = base + i;
    return {
      id: base + i,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    };
  });
  const tokenizerJson = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: { type: "NFC" },
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [
        {
          type: "Split",
          pattern: { Regex: QWEN_SPLIT_REGEX },
          behavior: "Isolated",
          invert: false,
        },
        { type: "ByteLevel", add_prefix_space: false, trim_offsets: false, use_regex: false },
      ],
    },
    post_processor: {
      type: "ByteLevel",
      add_prefix_space: false,
      trim_offsets: false,
      use_regex: false,
    },
    decoder: { type: "ByteLevel", add_prefix_space: false, trim_offsets: false, use_regex: false },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: "",
      end_of_word_suffix: "",
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
  return { tokenizerJson, baseVocabSize: base, vocabSize: base + specials.length, specialIds };
}

/** A Qwen2.5-Instruct-like tokenizer_config.json for a trained small tokenizer. */
export function smallTokenizerConfig(
  tok: SmallTokenizer,
  chatTemplate?: string,
): Record<string, unknown> {
  const decoder: Record<string, unknown> = {};
  const tj = tok.tokenizerJson as { added_tokens: { id: number; content: string }[] };
  for (const t of tj.added_tokens) {
    decoder[String(t.id)] = {
      content: t.content,
      lstrip: false,
      normalized: false,
      rstrip: false,
      single_word: false,
      special: true,
    };
  }
  const cfg: Record<string, unknown> = {
    add_bos_token: false,
    add_prefix_space: false,
    added_tokens_decoder: decoder,
    additional_special_tokens: QWEN_SPECIAL_TOKENS.slice(1).filter((t) => t in tok.specialIds),
    bos_token: null,
    clean_up_tokenization_spaces: false,
    eos_token: "<|im_end|>",
    errors: "replace",
    model_max_length: 4096,
    pad_token: "<|endoftext|>",
    split_special_tokens: false,
    tokenizer_class: "Qwen2Tokenizer",
    unk_token: null,
  };
  if (chatTemplate) cfg.chat_template = chatTemplate;
  return cfg;
}
