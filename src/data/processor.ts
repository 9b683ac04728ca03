/**
 * The SiQ-VL processor: conversation → prompt text → token ids and training labels.
 *
 * Prompt layout (SiQ-VL HEAD): an optional system message (the checkpoint's
 * `processor_config.json` `system_prompt`), then user/assistant turns rendered by the chat
 * template. The image placeholder `<|vision_start|>` + `<|image_pad|>`×N + `<|vision_end|>`
 * (N = image tokens the model produces per image) replaces a literal `<image>` in a question, or
 * else is put in front of the first question followed by "\n".
 *
 * Labels are −100 everywhere except the text of every assistant turn and the end-of-turn token
 * (`<|im_end|>`) right after it, so the model learns to stop. They are found without assuming
 * anything about the template: assistant contents are rendered as unique sentinels, located in
 * the rendered text, and mapped through the tokens' byte offsets.
 *
 * @module
 */

import {
  type ChatMessage,
  ChatTemplate,
  loadChatTemplateSource,
  SIQVL_CHAT_TEMPLATE,
} from "./chat_template.ts";
import type { Turn } from "./datasets/types.ts";
import {
  defaultImageProcessorConfig,
  type ImageProcessorConfig,
  parsePreprocessorConfig,
} from "./image_processor.ts";
import { TextTokenizer } from "./tokenizer.ts";
import { parseJsonText } from "../io/file.ts";
import type { ModelFolder } from "../io/source.ts";
import { asFolder } from "../io/source_local.ts";

/** Label value that the loss ignores. */
export const IGNORE_INDEX = -100;

/** Question used when a sample has none (as SiQ-VL does). */
export const DEFAULT_QUESTION = "Describe this image.";

/** Special token strings of the SiQ-VL prompt. */
export const VISION_START = "<|vision_start|>";
export const VISION_END = "<|vision_end|>";
export const IMAGE_PAD = "<|image_pad|>";
export const IMAGE_MARKER = "<image>";

/** A conversation to encode: turns in order; the last turn's answer may be absent (prompting). */
export interface Conversation {
  turns: { user: string; assistant?: string }[];
}

/** Token ids and labels of one conversation. */
export interface EncodedText {
  inputIds: Int32Array;
  /** Same length as inputIds; −100 where no loss is taken. Absent for generation prompts. */
  labels?: Int32Array;
  /** The rendered text the ids encode. */
  text: string;
  /** Images the text has placeholders for (1 for SiQ-VL samples). */
  numImages: number;
}

/** Options of {@link SiqvlProcessor}. */
export interface ProcessorOptions {
  tokenizer: TextTokenizer;
  /** Image tokens the model produces per image (((S / P) / r)² for SiQ-VL). */
  tokensPerImage: number;
  /** Image preprocessing; default SiQ-VL's at `imageSize`. */
  image?: ImageProcessorConfig;
  /** Used when `image` is absent. */
  imageSize?: number;
  /** Chat template source; default {@link SIQVL_CHAT_TEMPLATE}. */
  chatTemplate?: string;
  /** System message put before every conversation; none when undefined or empty. */
  systemPrompt?: string;
  /** Token closing an assistant turn, trained with the answer; default `<|im_end|>` or EOS. */
  endOfTurnToken?: string;
}

/** Options of {@link SiqvlProcessor.fromPretrained}. */
export interface FromPretrainedOptions {
  /** Overrides the count read from processor_config.json. */
  tokensPerImage?: number;
  /** Vision tower image size, used when the configs do not name one. */
  imageSize?: number;
  /** "checkpoint" (its template, else SiQ-VL's), "siqvl", or a template source. */
  chatTemplate?: "checkpoint" | "siqvl" | string;
  /** Overrides processor_config.json's `system_prompt` (empty string = none). */
  systemPrompt?: string;
}

const SENTINEL_OPEN = "\uE000";
const SENTINEL_CLOSE = "\uE001";

function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

/** Turns SiQ-VL conversations into ids and labels for one tokenizer and template. */
export class SiqvlProcessor {
  readonly tokenizer: TextTokenizer;
  readonly template: ChatTemplate;
  readonly image: ImageProcessorConfig;
  readonly tokensPerImage: number;
  readonly systemPrompt: string | undefined;
  readonly endOfTurnToken: string;
  /** Ids of the placeholder tokens and of padding. */
  readonly ids: {
    visionStart: number;
    visionEnd: number;
    imagePad: number;
    endOfTurn: number;
    pad: number;
  };
  /** `<|vision_start|>` + `<|image_pad|>`×N + `<|vision_end|>`. */
  readonly placeholder: string;

  constructor(opts: ProcessorOptions) {
    const { tokenizer } = opts;
    if (!Number.isInteger(opts.tokensPerImage) || opts.tokensPerImage <= 0) {
      throw new Error(`tokensPerImage must be a positive integer, got ${opts.tokensPerImage}`);
    }
    this.tokenizer = tokenizer;
    this.tokensPerImage = opts.tokensPerImage;
    if (opts.image) this.image = opts.image;
    else if (opts.imageSize) this.image = defaultImageProcessorConfig(opts.imageSize);
    else throw new Error("processor needs `image` settings or an `imageSize`");
    this.template = new ChatTemplate(opts.chatTemplate ?? SIQVL_CHAT_TEMPLATE);
    this.systemPrompt = opts.systemPrompt ? opts.systemPrompt : undefined;
    this.endOfTurnToken = opts.endOfTurnToken ??
      (tokenizer.tokenToId("<|im_end|>") !== undefined ? "<|im_end|>" : tokenizer.eosToken ?? "");
    const pad = tokenizer.padId ?? tokenizer.tokenToId("<|endoftext|>");
    if (pad === undefined) throw new Error("tokenizer has no pad token (nor <|endoftext|>)");
    this.ids = {
      visionStart: tokenizer.requireId(VISION_START),
      visionEnd: tokenizer.requireId(VISION_END),
      imagePad: tokenizer.requireId(IMAGE_PAD),
      endOfTurn: tokenizer.requireId(this.endOfTurnToken),
      pad,
    };
    this.placeholder = VISION_START + IMAGE_PAD.repeat(this.tokensPerImage) + VISION_END;
  }

  /**
   * Loads tokenizer, chat template, `processor_config.json` (system prompt, tokens per image)
   * and `preprocessor_config.json` from a checkpoint directory.
   */
  static async fromPretrained(
    from: string | ModelFolder,
    opts: FromPretrainedOptions = {},
  ): Promise<SiqvlProcessor> {
    const folder = asFolder(from);
    const dir = folder.path;
    const tokenizer = await TextTokenizer.fromDir(from);
    const readJson = async (name: string): Promise<Record<string, unknown> | undefined> => {
      const text = await folder.text(name, "config");
      return text === undefined ? undefined : parseJsonText(text, folder.where(name));
    };
    const proc = await readJson("processor_config.json");
    const pre = await readJson("preprocessor_config.json");
    const vitSize = typeof proc?.vit_image_size === "number" ? proc.vit_image_size : undefined;
    const imageSize = opts.imageSize ?? vitSize;
    const image = pre
      ? parsePreprocessorConfig(pre, imageSize)
      : imageSize
      ? defaultImageProcessorConfig(imageSize)
      : undefined;
    if (!image) {
      throw new Error(`${dir}: no image size (no preprocessor_config.json; pass imageSize)`);
    }
    let tokensPerImage = opts.tokensPerImage;
    if (tokensPerImage === undefined && proc) {
      const S = proc.vit_image_size, P = proc.vit_patch_size, r = proc.pixel_shuffle_factor;
      if (typeof S === "number" && typeof P === "number" && typeof r === "number") {
        tokensPerImage = Math.floor(Math.floor(S / P) / r) ** 2;
      }
    }
    if (tokensPerImage === undefined) {
      throw new Error(`${dir}: tokens per image unknown (pass tokensPerImage)`);
    }
    let chatTemplate: string | undefined;
    const choice = opts.chatTemplate ?? "checkpoint";
    if (choice === "checkpoint") {
      // A SiQ-VL checkpoint carries its own (ChatML) template; a bare LM's template (e.g. one
      // that injects a default system prompt) is not SiQ-VL's layout.
      chatTemplate = proc ? await loadChatTemplateSource(from) : undefined;
    } else if (choice !== "siqvl") chatTemplate = choice;
    const systemPrompt = opts.systemPrompt ??
      (typeof proc?.system_prompt === "string" ? proc.system_prompt : undefined);
    return new SiqvlProcessor({ tokenizer, tokensPerImage, image, chatTemplate, systemPrompt });
  }

  /**
   * Chat messages of a conversation: system prompt, then user/assistant turns with the image
   * placeholder in place. Throws when the conversation has more than one `<image>` marker (one
   * image per sample) or no turns.
   */
  messages(conv: Conversation): ChatMessage[] {
    if (conv.turns.length === 0) throw new Error("conversation has no turns");
    const markers = conv.turns.reduce((n, t) => n + t.user.split(IMAGE_MARKER).length - 1, 0);
    if (markers > 1) {
      throw new Error(`conversation has ${markers} ${IMAGE_MARKER} markers but one image`);
    }
    const norm = (s: string) => this.tokenizer.normalizeText(s);
    const out: ChatMessage[] = [];
    if (this.systemPrompt) out.push({ role: "system", content: norm(this.systemPrompt) });
    conv.turns.forEach((t, i) => {
      let user = norm(t.user);
      if (markers === 1) user = user.replace(IMAGE_MARKER, this.placeholder);
      else if (i === 0) user = this.placeholder + "\n" + (user.trim() ? user : DEFAULT_QUESTION);
      out.push({ role: "user", content: user });
      if (t.assistant !== undefined) out.push({ role: "assistant", content: norm(t.assistant) });
    });
    return out;
  }

  /** Ids that end a generated answer: the end-of-turn token and the tokenizer's EOS and
   * `<|endoftext|>` where they exist. */
  stopIds(): number[] {
    const ids = new Set<number>([this.ids.endOfTurn]);
    const eos = this.tokenizer.eosId;
    if (eos !== undefined) ids.add(eos);
    const eot = this.tokenizer.tokenToId("<|endoftext|>");
    if (eot !== undefined) ids.add(eot);
    return [...ids];
  }

  /** Ids of a generation prompt: the conversation so far plus the assistant header. */
  encodePrompt(question: string, history: Turn[] = []): EncodedText {
    const conv: Conversation = { turns: [...history, { user: question }] };
    const text = this.template.render(this.messages(conv), { addGenerationPrompt: true });
    return { inputIds: Int32Array.from(this.tokenizer.encode(text)), text, numImages: 1 };
  }

  /**
   * Ids and labels of a training conversation (every turn answered): labels hold the ids of
   * each assistant answer and of the end-of-turn token closing it, −100 elsewhere.
   */
  encode(conv: Conversation): EncodedText {
    const msgs = this.messages(conv);
    const answers: string[] = [];
    const sentinel = msgs.map((m) => {
      if (m.role !== "assistant") return m;
      const tag = `${SENTINEL_OPEN}${answers.length}${SENTINEL_CLOSE}`;
      answers.push(m.content);
      return { role: m.role, content: tag };
    });
    if (answers.length === 0) throw new Error("conversation has no assistant answer to train on");
    const rendered = this.template.render(sentinel, { addGenerationPrompt: false });

    // Put the answers back, remembering each one's character span (+ its end-of-turn token).
    let text = "";
    const spans: [number, number][] = [];
    let from = 0;
    for (let k = 0; k < answers.length; k++) {
      const tag = `${SENTINEL_OPEN}${k}${SENTINEL_CLOSE}`;
      const at = rendered.indexOf(tag, from);
      if (at < 0 || rendered.indexOf(tag, at + tag.length) >= 0) {
        throw new Error(`chat template does not render assistant turn ${k} exactly once`);
      }
      text += rendered.slice(from, at);
      const start = text.length;
      text += answers[k];
      from = at + tag.length;
      let end = text.length;
      if (this.endOfTurnToken && rendered.startsWith(this.endOfTurnToken, from)) {
        text += this.endOfTurnToken;
        from += this.endOfTurnToken.length;
        end = text.length;
      }
      spans.push([start, end]);
    }
    text += rendered.slice(from);
    if (text.includes(SENTINEL_OPEN)) throw new Error("chat template duplicated an answer");
    if (this.tokenizer.normalizeText(text) !== text) {
      throw new Error("text changes under the tokenizer's normaliser; label offsets would shift");
    }

    const ids = this.tokenizer.encode(text);
    const lens = this.tokenizer.tokenByteLengths(ids);
    const total = lens.reduce((a, b) => a + b, 0);
    if (total !== utf8Length(text)) {
      throw new Error(
        `token byte lengths (${total}) do not cover the text (${utf8Length(text)} bytes)`,
      );
    }
    const byteSpans = spans.map(([s, e]) => [
      utf8Length(text.slice(0, s)),
      utf8Length(text.slice(0, e)),
    ]);
    const labels = new Int32Array(ids.length).fill(IGNORE_INDEX);
    let pos = 0, span = 0;
    for (let i = 0; i < ids.length; i++) {
      const b0 = pos, b1 = pos + lens[i];
      pos = b1;
      while (span < byteSpans.length && byteSpans[span][1] <= b0) span++;
      if (span < byteSpans.length && b1 > byteSpans[span][0] && b0 < byteSpans[span][1]) {
        labels[i] = ids[i];
      }
      if (ids[i] === this.ids.imagePad) labels[i] = IGNORE_INDEX;
    }
    return { inputIds: Int32Array.from(ids), labels, text, numImages: 1 };
  }

  /** Training encoding of a sample's turns (or its question/answer pair). */
  encodeSample(s: { question: string; answer: string; turns?: Turn[] }): EncodedText {
    const turns = s.turns?.length ? s.turns : [{ user: s.question, assistant: s.answer }];
    return this.encode({ turns });
  }
}
