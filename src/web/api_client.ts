/// <reference lib="dom" />
// The page's "run on the server" path: one question about one image through the server's
// OpenAI-compatible /v1/chat/completions with streaming (server-sent events), the image sent as
// a data URL.

/** Options of {@link askServer}. */
export interface ServerAskOptions {
  maxTokens?: number;
  /** Headers for the request (e.g. Authorization). */
  headers?: Record<string, string>;
  /** The answer so far, after each streamed piece. */
  onText?: (textSoFar: string) => void;
}

/** What the server answered. */
export interface ServerAnswer {
  text: string;
  /** Streamed content pieces (one per token for siqvl's server). */
  chunks: number;
  seconds: number;
}

/** Ask `model` at `base` (the server's origin) about `image`, greedily. */
export async function askServer(
  base: string,
  model: string,
  image: Blob,
  question: string,
  opts: ServerAskOptions = {},
): Promise<ServerAnswer> {
  const dataUrl = await new Promise<string>((ok, fail) => {
    const r = new FileReader();
    r.onload = () => ok(r.result as string);
    r.onerror = () => fail(new Error("cannot read the image"));
    r.readAsDataURL(image);
  });
  const t0 = performance.now();
  const res = await fetch(new URL("/v1/chat/completions", base), {
    method: "POST",
    headers: { "content-type": "application/json", ...opts.headers },
    body: JSON.stringify({
      model,
      stream: true,
      max_tokens: opts.maxTokens ?? 32,
      temperature: 0,
      messages: [{
        role: "user",
        content: [
          { type: "image_url", image_url: { url: dataUrl } },
          { type: "text", text: question },
        ],
      }],
    }),
  });
  if (!res.ok || !res.body) throw new Error(`server: HTTP ${res.status}: ${await res.text()}`);
  let text = "", chunks = 0, buf = "";
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buf += value;
    for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (!line.startsWith("data:") || line === "data: [DONE]") continue;
      const msg = JSON.parse(line.slice(5));
      if (msg.error) throw new Error(`server: ${msg.error.message ?? JSON.stringify(msg.error)}`);
      const delta = msg.choices?.[0]?.delta?.content;
      if (delta) {
        text += delta;
        chunks++;
        opts.onText?.(text.trim());
      }
    }
  }
  return { text: text.trim(), chunks, seconds: (performance.now() - t0) / 1000 };
}
