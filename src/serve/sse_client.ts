// A small client of OpenAI-compatible chat-completions servers (ours, vLLM, llama.cpp): the SSE
// parser and a streaming request, shared by cli/chat.ts and bench/serve_load.ts.

import { sniffImageFormat } from "../data/image.ts";

/** One parsed server-sent event payload (`data: …`); "[DONE]" ends the stream. */
export async function* sseEvents(body: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const dec = new TextDecoder();
  let buf = "";
  for await (const c of body) {
    buf += dec.decode(c, { stream: true }).replaceAll("\r\n", "\n");
    let nl;
    while ((nl = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, nl);
      buf = buf.slice(nl + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).trimStart()).join("\n");
      if (data) yield data;
    }
  }
}

/** Outcome of a streamed completion. */
export interface StreamResult {
  text: string;
  finishReason: string | null;
  usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number } | null;
  /** Milliseconds to the first chunk with content or a finish reason. */
  ttftMs: number;
  /** The stream ended with [DONE]. */
  done: boolean;
}

/** POST a streaming chat completion and call `onDelta` with each piece of text. */
export async function streamChat(
  baseUrl: string,
  body: Record<string, unknown>,
  opts: { apiKey?: string; signal?: AbortSignal; onDelta?: (s: string) => void } = {},
): Promise<StreamResult> {
  const t0 = performance.now();
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (opts.apiKey) headers.authorization = `Bearer ${opts.apiKey}`;
  const res = await fetch(`${baseUrl.replace(/\/+$/, "")}/chat/completions`, {
    method: "POST",
    headers,
    body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }),
    signal: opts.signal,
  });
  if (res.status !== 200) {
    const text = await res.text();
    let msg = text;
    try {
      msg = JSON.parse(text).error?.message ?? text;
    } catch { /* not JSON */ }
    throw new Error(`HTTP ${res.status}: ${msg}`);
  }
  const out: StreamResult = { text: "", finishReason: null, usage: null, ttftMs: -1, done: false };
  for await (const data of sseEvents(res.body!)) {
    if (data === "[DONE]") {
      out.done = true;
      break;
    }
    const chunk = JSON.parse(data);
    if (chunk.error) throw new Error(`server error: ${chunk.error.message}`);
    if (chunk.usage) out.usage = chunk.usage;
    const ch = chunk.choices?.[0];
    if (!ch) continue;
    const piece: string = ch.delta?.content ?? "";
    if ((piece || ch.finish_reason) && out.ttftMs < 0) out.ttftMs = performance.now() - t0;
    if (piece) {
      out.text += piece;
      opts.onDelta?.(piece);
    }
    if (ch.finish_reason) out.finishReason = ch.finish_reason;
  }
  return out;
}

/** A data: URL of image bytes (type from the magic bytes). */
export function imageDataUrl(bytes: Uint8Array): string {
  const fmt = sniffImageFormat(bytes);
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return `data:image/${fmt === "unknown" ? "png" : fmt};base64,${btoa(bin)}`;
}
