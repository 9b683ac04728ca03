/**
 * Text tokenizer: a checkpoint's `tokenizer.json` + `tokenizer_config.json` through
 * `@huggingface/tokenizers` (Qwen2.5's byte-level BPE gives the same ids as the Python
 * tokenizers).
 *
 * Added tokens (`<|im_start|>`, `<|image_pad|>`, …) are matched atomically before BPE, so they
 * always become exactly one id; no BOS/EOS is added by {@link TextTokenizer.encode} (chat
 * templates write every special token themselves, and Qwen has no BOS).
 *
 * @module
 */

import { Tokenizer } from "../deps_text.ts";
import { parseJsonText } from "../io/file.ts";
import { type ModelFolder, requireText } from "../io/source.ts";
import { asFolder } from "../io/source_local.ts";

/** The parts of `tokenizer_config.json` this library reads (others are passed through). */
export interface TokenizerConfig {
  eos_token?: string | { content: string } | null;
  pad_token?: string | { content: string } | null;
  bos_token?: string | { content: string } | null;
  chat_template?: string | { name: string; template: string }[];
  clean_up_tokenization_spaces?: boolean;
  [key: string]: unknown;
}

interface AddedTokenJson {
  id: number;
  content: string;
  special?: boolean;
}

/** Options of {@link TextTokenizer.decode}. */
export interface DecodeOptions {
  /** Drop special added tokens (`<|im_end|>`, `<|image_pad|>`, …). Default false. */
  skipSpecialTokens?: boolean;
}

function tokenName(v: TokenizerConfig["eos_token"]): string | undefined {
  if (v == null) return undefined;
  return typeof v === "string" ? v : v.content;
}

/** Decoder types whose token strings map one character to one byte (GPT-2's byte table). */
function isByteLevel(decoder: unknown): boolean {
  if (!decoder || typeof decoder !== "object") return false;
  const d = decoder as { type?: string; decoders?: unknown[] };
  if (d.type === "ByteLevel") return true;
  return d.type === "Sequence" && (d.decoders ?? []).some(isByteLevel);
}

/** Checks the fields of the two tokenizer files this library relies on, naming file and field. */
function checkTokenizerFiles(
  tj: unknown,
  tjPath: string,
  cfg: unknown,
  cfgPath: string,
): void {
  const isObj = (v: unknown): v is Record<string, unknown> =>
    v !== null && typeof v === "object" && !Array.isArray(v);
  if (!isObj(tj)) throw new Error(`${tjPath}: expected a JSON object`);
  if (!isObj(tj.model)) throw new Error(`${tjPath}: field "model" must be an object`);
  if (typeof tj.model.type !== "string") {
    throw new Error(`${tjPath}: field "model.type" must be a string`);
  }
  if (tj.model.type === "BPE" && !isObj(tj.model.vocab)) {
    throw new Error(`${tjPath}: field "model.vocab" must be an object of token → id`);
  }
  if (tj.added_tokens !== undefined) {
    if (!Array.isArray(tj.added_tokens)) {
      throw new Error(`${tjPath}: field "added_tokens" must be a list`);
    }
    tj.added_tokens.forEach((t, i) => {
      if (!isObj(t) || !Number.isInteger(t.id) || (t.id as number) < 0) {
        throw new Error(`${tjPath}: field "added_tokens[${i}].id" must be a non-negative integer`);
      }
      if (typeof t.content !== "string") {
        throw new Error(`${tjPath}: field "added_tokens[${i}].content" must be a string`);
      }
    });
  }
  if (!isObj(cfg)) throw new Error(`${cfgPath}: expected a JSON object`);
  for (const f of ["eos_token", "pad_token", "bos_token"]) {
    const v = cfg[f];
    if (v == null || typeof v === "string") continue;
    if (!isObj(v) || typeof v.content !== "string") {
      throw new Error(`${cfgPath}: field "${f}" must be a string or {content: string}`);
    }
  }
}

/** A loaded tokenizer with the special-token ids a VLM needs. */
export class TextTokenizer {
  readonly #tok: Tokenizer;
  readonly #added = new Map<number, AddedTokenJson>();
  readonly #byteLevel: boolean;
  readonly #nfc: boolean;
  /** Ids of added tokens marked special. */
  readonly specialIds: ReadonlySet<number>;
  /** One past the largest id (vocabulary + added tokens). */
  readonly vocabSize: number;
  /** `tokenizer_config.json` as given. */
  readonly config: TokenizerConfig;
  /** End-of-sequence token (`<|im_end|>` for Qwen2.5-Instruct) and its id. */
  readonly eosToken: string | undefined;
  readonly eosId: number | undefined;
  /** Padding token (`<|endoftext|>` for Qwen2.5) and its id; falls back to EOS. */
  readonly padToken: string | undefined;
  readonly padId: number | undefined;

  constructor(tokenizerJson: Record<string, unknown>, config: TokenizerConfig = {}) {
    if (!tokenizerJson || typeof tokenizerJson !== "object" || !tokenizerJson.model) {
      throw new Error("tokenizer.json: missing `model` section");
    }
    const json: Record<string, unknown> = { added_tokens: [], ...tokenizerJson };
    this.config = config;
    this.#tok = new Tokenizer(json, { clean_up_tokenization_spaces: false, ...config });
    const special = new Set<number>();
    let maxId = -1;
    for (const t of json.added_tokens as AddedTokenJson[]) {
      this.#added.set(t.id, t);
      if (t.special) special.add(t.id);
      maxId = Math.max(maxId, t.id);
    }
    for (const id of this.#tok.get_vocab(false).values()) maxId = Math.max(maxId, id);
    this.specialIds = special;
    this.vocabSize = maxId + 1;
    this.#byteLevel = isByteLevel(json.decoder);
    const norm = json.normalizer as { type?: string } | null | undefined;
    this.#nfc = norm?.type === "NFC";
    this.eosToken = tokenName(config.eos_token);
    this.eosId = this.eosToken === undefined ? undefined : this.tokenToId(this.eosToken);
    this.padToken = tokenName(config.pad_token) ?? this.eosToken;
    this.padId = this.padToken === undefined ? undefined : this.tokenToId(this.padToken);
  }

  /**
   * Loads `<dir>/tokenizer.json` and (if present) `<dir>/tokenizer_config.json` through the
   * bounded reader; every error names the file (and the field, where one is at fault).
   */
  static async fromDir(dir: string | ModelFolder): Promise<TextTokenizer> {
    const folder = asFolder(dir);
    const tjPath = folder.where("tokenizer.json");
    const cfgPath = folder.where("tokenizer_config.json");
    const tj = parseJsonText<Record<string, unknown>>(
      await requireText(folder, "tokenizer.json", "tokenizer"),
      tjPath,
    );
    const cfgText = await folder.text("tokenizer_config.json", "tokenizer");
    const cfg = cfgText === undefined ? {} : parseJsonText<TokenizerConfig>(cfgText, cfgPath);
    checkTokenizerFiles(tj, tjPath, cfg, cfgPath);
    try {
      return new TextTokenizer(tj, cfg);
    } catch (e) {
      throw new Error(`${tjPath}: ${(e as Error).message}`);
    }
  }

  /** Token ids of `text`; special tokens in the text are matched atomically. */
  encode(text: string): number[] {
    if (text.length === 0) return [];
    const ids = this.#tok.encode(text, { add_special_tokens: false }).ids;
    for (let i = 0; i < ids.length; i++) {
      if (ids[i] === undefined || ids[i] === null) {
        throw new Error(`tokenizer has no id for a piece of ${JSON.stringify(text.slice(0, 40))}`);
      }
    }
    return ids;
  }

  /** Text of `ids`; with `skipSpecialTokens`, special added tokens are left out. */
  decode(ids: ArrayLike<number>, opts: DecodeOptions = {}): string {
    if (ids.length === 0) return "";
    const arr = Array.from(ids);
    for (const id of arr) {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
        throw new Error(`token id ${id} is outside the vocabulary [0, ${this.vocabSize})`);
      }
    }
    return this.#tok.decode(arr, {
      skip_special_tokens: opts.skipSpecialTokens ?? false,
      clean_up_tokenization_spaces: this.config.clean_up_tokenization_spaces ?? false,
    });
  }

  /** Id of a token string (vocabulary entry or added token), or undefined. */
  tokenToId(token: string): number | undefined {
    return this.#tok.token_to_id(token);
  }

  /** Id of a token that must exist; throws a clear error otherwise. */
  requireId(token: string): number {
    const id = this.tokenToId(token);
    if (id === undefined) throw new Error(`tokenizer has no token ${JSON.stringify(token)}`);
    return id;
  }

  /** Token string of an id (raw vocabulary form, e.g. `Ġworld`), or undefined. */
  idToToken(id: number): string | undefined {
    return this.#tok.id_to_token(id);
  }

  /** True when `id` is an added token marked special. */
  isSpecial(id: number): boolean {
    return this.specialIds.has(id);
  }

  /**
   * Brings text into the form the tokenizer's normaliser would give it, so character offsets
   * computed on the result line up with the tokens (NFC for Qwen).
   */
  normalizeText(text: string): string {
    return this.#nfc ? text.normalize("NFC") : text;
  }

  /**
   * UTF-8 byte length that each token contributes to the decoded text. Exact for byte-level
   * BPE (each character of a vocabulary entry is one byte; added tokens are their content);
   * otherwise each token is decoded on its own, which is right for most vocabularies.
   */
  tokenByteLengths(ids: ArrayLike<number>): Int32Array {
    const enc = new TextEncoder();
    const out = new Int32Array(ids.length);
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      const added = this.#added.get(id);
      if (added) out[i] = enc.encode(added.content).length;
      else if (this.#byteLevel) out[i] = this.idToToken(id)?.length ?? 0;
      else out[i] = enc.encode(this.decode([id])).length;
    }
    return out;
  }
}
