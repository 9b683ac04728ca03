// A chat request's messages → prompt token ids and images, through the checkpoint's chat
// template. A user message's parts are joined in order: an image becomes the placeholder
// (<|vision_start|><|image_pad|>×N<|vision_end|>), consecutive texts are joined with "\n", and a
// text right after an image starts on a new line, so [image, text] renders exactly as the
// processor's own prompt (placeholder + "\n" + question). The processor's system prompt is used
// when the request has no system message.

import type { ChatMessage } from "../data/chat_template.ts";
import { IMAGE_PAD, type SiqvlProcessor, VISION_END, VISION_START } from "../data/processor.ts";
import { badField, type ParsedMessage } from "./protocol.ts";

/** The rendered prompt and the image URLs in placeholder order. */
export interface BuiltPrompt {
  ids: number[];
  text: string;
  imageUrls: { url: string; param: string }[];
}

/** Render `messages` with the chat template and tokenize. */
export function buildPrompt(processor: SiqvlProcessor, messages: ParsedMessage[]): BuiltPrompt {
  const tok = processor.tokenizer;
  const imageUrls: BuiltPrompt["imageUrls"] = [];
  const chat: ChatMessage[] = [];
  if (processor.systemPrompt && !messages.some((m) => m.role === "system")) {
    chat.push({ role: "system", content: tok.normalizeText(processor.systemPrompt) });
  }
  messages.forEach((m, i) => {
    let content = "";
    let prev: "text" | "image" | null = null;
    m.parts.forEach((p, j) => {
      if (p.type === "image_url") {
        imageUrls.push({ url: p.url, param: `messages[${i}].content[${j}].image_url.url` });
        content += processor.placeholder;
        prev = "image";
        return;
      }
      for (const special of [IMAGE_PAD, VISION_START, VISION_END]) {
        if (p.text.includes(special)) {
          throw badField(`messages[${i}].content`, `text may not contain ${special}`);
        }
      }
      if (prev !== null) content += "\n";
      content += tok.normalizeText(p.text);
      prev = "text";
    });
    chat.push({ role: m.role, content });
  });
  const text = processor.template.render(chat, { addGenerationPrompt: true });
  return { ids: tok.encode(text), text, imageUrls };
}
