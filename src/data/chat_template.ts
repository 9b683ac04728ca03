/**
 * Chat templates: a checkpoint's Jinja template rendered with `@huggingface/jinja`.
 *
 * Where a checkpoint keeps its template, in the order transformers looks: `chat_template.jinja`,
 * then `chat_template.json` (`{"chat_template": …}`), then `tokenizer_config.json`'s
 * `chat_template` (a string, or a list of named templates of which "default" is used).
 * {@link SIQVL_CHAT_TEMPLATE} is SiQ-VL's own ChatML layout for checkpoints without one.
 *
 * @module
 */

import { Template } from "../deps_text.ts";
import type { ModelFolder } from "../io/source.ts";
import { asFolder } from "../io/source_local.ts";

/** One chat message. `content` is plain text (image placeholders already spelled out). */
export interface ChatMessage {
  role: string;
  content: string;
}

/**
 * SiQ-VL's ChatML template: every message renders as `<|im_start|>{role}\n{content}<|im_end|>\n`,
 * no system prompt is injected, and the generation prompt is `<|im_start|>assistant\n`.
 */
export const SIQVL_CHAT_TEMPLATE = "{% for message in messages %}" +
  "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}" +
  "{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/** Options of {@link ChatTemplate.render}. */
export interface RenderOptions {
  /** Append the assistant header so the model continues with an answer. */
  addGenerationPrompt?: boolean;
  /** Extra variables for the template (`bos_token`, `eos_token`, `tools`, …). */
  variables?: Record<string, unknown>;
}

/** A parsed Jinja chat template. */
export class ChatTemplate {
  readonly source: string;
  readonly #template: Template;

  constructor(source: string) {
    if (typeof source !== "string" || source.length === 0) {
      throw new Error("chat template must be a non-empty string");
    }
    this.source = source;
    try {
      this.#template = new Template(source);
    } catch (e) {
      throw new Error(`chat template does not parse: ${e instanceof Error ? e.message : e}`);
    }
  }

  /**
   * Renders `messages` to the text the model is trained on / prompted with. A template's
   * `raise_exception(msg)` throws an Error carrying `msg`.
   */
  render(messages: ChatMessage[], opts: RenderOptions = {}): string {
    return this.#template.render({
      bos_token: "",
      eos_token: "",
      ...opts.variables,
      messages,
      add_generation_prompt: opts.addGenerationPrompt ?? false,
    });
  }
}

/** Picks the template string out of a `chat_template` value (string or named list). */
export function pickTemplate(value: unknown, where: string): string | undefined {
  if (value == null) return undefined;
  if (typeof value === "string") return value;
  if (Array.isArray(value)) {
    const named = value as { name?: string; template?: string }[];
    const t = named.find((x) => x.name === "default") ?? named[0];
    if (t && typeof t.template === "string") return t.template;
  }
  throw new Error(`${where}: chat_template must be a string or a list of {name, template}`);
}

/** Finds a checkpoint directory's chat template source, or undefined when it has none. */
export async function loadChatTemplateSource(
  dir: string | ModelFolder,
): Promise<string | undefined> {
  const folder = asFolder(dir);
  const readOptional = (name: string) => folder.text(name, "tokenizer");
  const jinja = await readOptional("chat_template.jinja");
  if (jinja !== undefined && jinja.trim() !== "") return jinja;
  const json = await readOptional("chat_template.json");
  if (json !== undefined) {
    const t = pickTemplate(JSON.parse(json).chat_template, "chat_template.json");
    if (t) return t;
  }
  const cfg = await readOptional("tokenizer_config.json");
  if (cfg !== undefined) {
    return pickTemplate(JSON.parse(cfg).chat_template, "tokenizer_config.json");
  }
  return undefined;
}
