// deno task chat --checkpoint DIR | --url http://127.0.0.1:8000/v1 [flags]
// Interactive multi-turn chat in the terminal with streamed answers. With --checkpoint it starts
// the server in-process on 127.0.0.1 (any free port) and talks to it like to any other
// OpenAI-compatible server (--url: ours, vLLM, llama.cpp), so both paths share one client.
//
// Commands: /image PATH (attach to the next message), /system TEXT, /reset, /save FILE,
// /quit or /exit. Ctrl+C stops the answer being generated; a second Ctrl+C (or one while idle)
// exits.

import { numFlag, parseFlags } from "./flags.ts";
import { imageDataUrl, streamChat } from "../src/serve/sse_client.ts";
import { readBounded } from "../src/io/file.ts";

const HELP = `Usage: deno task chat (--checkpoint DIR | --url URL) [flags]

  --checkpoint DIR     start a local server for this checkpoint (in-process, 127.0.0.1)
  --url URL            an OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1
  --model NAME         model id to request (default: the server's first model)
  --api_key KEY        Bearer key for --url
  --system TEXT        system message
  --image PATH -p TEXT one question about one image, then exit
  --temperature T      default 0.2 (0 = greedy)
  --max_tokens N       default 128
  --seed N             sampling seed
  --help

Commands: /image PATH, /system TEXT, /reset, /save FILE, /quit, /exit`;

const OPTIONS = {
  checkpoint: { type: "string" },
  url: { type: "string" },
  model: { type: "string" },
  api_key: { type: "string" },
  system: { type: "string" },
  image: { type: "string" },
  prompt: { type: "string", short: "p" },
  temperature: { type: "string" },
  max_tokens: { type: "string" },
  seed: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

/** A chat message as sent to the server. */
type Message = { role: string; content: string | Record<string, unknown>[] };

/** Terminal I/O of the chat (replaced in tests). */
export interface ChatIO {
  lines: AsyncIterable<string>;
  write: (s: string) => void;
  /** Called with a function that interrupts the running answer (Ctrl+C). */
  onInterrupt?: (stop: () => boolean) => void;
}

/** Lines of standard input. */
async function* stdinLines(): AsyncGenerator<string> {
  const dec = new TextDecoder();
  let buf = "";
  for await (const c of Deno.stdin.readable) {
    buf += dec.decode(c, { stream: true });
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      yield buf.slice(0, nl).replace(/\r$/, "");
      buf = buf.slice(nl + 1);
    }
  }
  if (buf) yield buf;
}

/** The chat session: history, pending image, and sending a turn. */
class Session {
  history: Message[] = [];
  system: string | undefined;
  pendingImage: string | null = null;

  constructor(
    readonly base: string,
    readonly model: string,
    readonly sampling: Record<string, unknown>,
    readonly apiKey?: string,
  ) {}

  messages(): Message[] {
    return this.system ? [{ role: "system", content: this.system }, ...this.history] : this.history;
  }

  /** Send `text` (with the pending image) and stream the answer to `write`. */
  async ask(text: string, write: (s: string) => void, signal?: AbortSignal): Promise<string> {
    const content: Message["content"] = this.pendingImage
      ? [{ type: "image_url", image_url: { url: this.pendingImage } }, { type: "text", text }]
      : text;
    const user: Message = { role: "user", content };
    const res = await streamChat(this.base, {
      model: this.model,
      messages: [...this.messages(), user],
      ...this.sampling,
    }, { apiKey: this.apiKey, signal, onDelta: write });
    this.pendingImage = null;
    this.history.push(user, { role: "assistant", content: res.text });
    return res.text;
  }
}

/** Run the chat; returns the last answer (single-turn mode) or "". */
export async function chatMain(argv: string[], io?: ChatIO): Promise<string> {
  const v = parseFlags(argv, OPTIONS);
  const write = io?.write ??
    ((s: string) => void Deno.stdout.writeSync(new TextEncoder().encode(s)));
  if (v.help) {
    write(HELP + "\n");
    return "";
  }
  if (!v.checkpoint === !v.url) throw new Error("give exactly one of --checkpoint and --url");
  const sampling: Record<string, unknown> = {
    temperature: numFlag("temperature", v.temperature, 0.2, (x) => x >= 0 && x <= 2),
    max_tokens: numFlag("max_tokens", v.max_tokens, 128, (x) => Number.isInteger(x) && x >= 1),
  };
  if (v.seed !== undefined) sampling.seed = numFlag("seed", v.seed, 0, Number.isInteger);

  let base = v.url ?? "";
  let shutdown = async () => {};
  if (v.checkpoint) {
    const { announce } = await import("../src/gpu/announce.ts");
    const { openSiqvl } = await import("../src/models/factory.ts");
    const { startServer } = await import("../src/serve/server.ts");
    const gpu = await announce(undefined, (line) => write(line + "\n"));
    const bundle = await openSiqvl(gpu, { checkpoint: v.checkpoint }, { pinWeights: true });
    const server = startServer(bundle, { modelName: "local", maxBatch: 1, maxQueue: 1 });
    base = `${server.url}/v1`;
    shutdown = async () => {
      await server.shutdown();
      bundle.dispose();
    };
  }
  try {
    let model = v.model;
    if (!model) {
      const headers: Record<string, string> = v.api_key
        ? { authorization: `Bearer ${v.api_key}` }
        : {};
      const res = await fetch(`${base.replace(/\/+$/, "")}/models`, { headers });
      if (!res.ok) throw new Error(`${base}/models: HTTP ${res.status}`);
      model = (await res.json()).data?.[0]?.id;
      if (!model) throw new Error(`${base}/models lists no model`);
    }
    const s = new Session(base, model!, sampling, v.api_key);
    s.system = v.system;
    if (v.image || v.prompt) {
      if (v.image) s.pendingImage = imageDataUrl(await readBounded(v.image, "image"));
      const answer = await s.ask(v.prompt ?? "Describe this image.", write);
      write("\n");
      return answer;
    }
    await repl(s, io ?? { lines: stdinLines(), write, onInterrupt: sigint }, write);
    return "";
  } finally {
    await shutdown();
  }
}

/** Ctrl+C: stop the running answer, or exit when there is none. */
function sigint(stop: () => boolean): void {
  Deno.addSignalListener("SIGINT", () => {
    if (!stop()) Deno.exit(130);
  });
}

async function repl(s: Session, io: ChatIO, write: (s: string) => void): Promise<void> {
  let running: AbortController | null = null;
  io.onInterrupt?.(() => {
    if (!running) return false;
    running.abort();
    return true;
  });
  write(`chatting with ${s.model} (/image PATH, /system TEXT, /reset, /save FILE, /quit)\n> `);
  for await (const raw of io.lines) {
    const line = raw.trim();
    const cmd = line.split(/\s+/)[0];
    const arg = line.slice(cmd.length).trim();
    try {
      if (line === "") {
        // nothing
      } else if (cmd === "/quit" || cmd === "/exit") {
        return;
      } else if (cmd === "/image") {
        if (!arg) throw new Error("/image needs a path");
        s.pendingImage = imageDataUrl(await readBounded(arg, "image"));
        write(`[image ${arg} attached to the next message]\n`);
      } else if (cmd === "/system") {
        s.system = arg || undefined;
        write(arg ? "[system message set]\n" : "[system message cleared]\n");
      } else if (cmd === "/reset" || cmd === "/clear") {
        s.history = [];
        s.pendingImage = null;
        write("[conversation reset]\n");
      } else if (cmd === "/save") {
        if (!arg) throw new Error("/save needs a file name");
        const doc = { model: s.model, messages: s.messages() };
        await Deno.writeTextFile(arg, JSON.stringify(doc, null, 2) + "\n");
        write(`[saved ${s.messages().length} messages to ${arg}]\n`);
      } else if (cmd.startsWith("/")) {
        throw new Error(`unknown command ${cmd}`);
      } else {
        running = new AbortController();
        try {
          await s.ask(line, write, running.signal);
        } catch (e) {
          if (!running.signal.aborted) throw e;
          write(" [stopped]");
        } finally {
          running = null;
        }
        write("\n");
      }
    } catch (e) {
      write(`error: ${(e as Error).message}\n`);
    }
    write("> ");
  }
}

if (import.meta.main) {
  try {
    await chatMain(Deno.args);
    Deno.exit(0);
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
