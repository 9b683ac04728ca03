// The OpenAI-compatible HTTP server on Deno.serve (bound to 127.0.0.1 unless told otherwise).
//
//   POST /v1/chat/completions   chat with images (stream or not), continuous batching
//   GET  /v1/models             the base model and each LoRA adapter
//   GET  /health                200 {"status":"ok"} (no key needed)
//   GET  /metrics               Prometheus text
//
// Limits are checked before any work: body bytes (413), images per request and image bytes /
// pixels (400 / 413), prompt + max_tokens against the KV capacity (400 context_length_exceeded
// with n_prompt_tokens / n_ctx as llama.cpp sends them), a full queue (429 with Retry-After).

import type { SiqvlBundle } from "../models/factory.ts";
import { mixSeed } from "../nn/random.ts";
import type { AdapterSet } from "./adapters.ts";
import { type ChoiceSpec, Engine, type FinishReason, QueueFullError } from "./engine.ts";
import { DEFAULT_IMAGE_LIMITS, type ImageLimits, loadRequestImage } from "./image_input.ts";
import { ServeMetrics } from "./metrics.ts";
import { buildPrompt } from "./prompt.ts";
import { ApiError, badField, type ChatRequest, parseChatRequest } from "./protocol.ts";
import { readLimited } from "./read_limited.ts";
import { TextStream } from "./text_stream.ts";

/** Server settings. */
export interface ServeOptions {
  /** The base model's id in `model` fields and /v1/models. */
  modelName: string;
  /** Sequences decoded together (default 16). */
  maxBatch?: number;
  /** Sequences allowed to wait (default 64). */
  maxQueue?: number;
  /** Largest max_tokens a request may ask for, and the default (default 256). */
  maxTokensLimit?: number;
  /** KV slots per sequence: prompt + completion (default: min(max_position_embeddings, 2048)). */
  maxContext?: number;
  /** Padded prompt positions (rows × positions) prefilled per scheduler iteration (default 512). */
  prefillChunk?: number;
  /** Require `Authorization: Bearer <key>` (except /health). */
  apiKey?: string;
  /** Images in one request (default 4). */
  maxImages?: number;
  /** Request body bytes (default 32 MiB). */
  maxBodyBytes?: number;
  images?: Partial<ImageLimits>;
  adapters?: AdapterSet;
  /** Extra GET routes tried before the 404 (the web page, src/web/static.ts); /models/ after auth. */
  web?: (req: Request) => Promise<Response | null>;
  /** Seconds between `: ping` comments on a stream (default 15). */
  pingSeconds?: number;
}

/** A running server. */
export interface RunningServer {
  url: string;
  port: number;
  engine: Engine;
  metrics: ServeMetrics;
  /** Stop accepting, cancel what runs, free the caches (the model stays the caller's). */
  shutdown(): Promise<void>;
}

const JSON_HEADERS = { "content-type": "application/json" };

function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: { ...JSON_HEADERS, ...headers } });
}

function errorResponse(e: unknown): Response {
  if (e instanceof ApiError) {
    const headers: Record<string, string> = {};
    if (e.status === 429) headers["retry-after"] = "1";
    return json(e.status, e.body(), headers);
  }
  const msg = e instanceof Error ? e.message : String(e);
  return json(500, new ApiError(500, msg, "server_error").body());
}

/** One choice's outcome. */
interface ChoiceResult {
  text: string;
  tokens: number;
  finish: FinishReason;
  error?: Error;
}

/** The request handler and engine of a server (without the listener; tests may call it). */
export class ChatService {
  readonly engine: Engine;
  readonly metrics: ServeMetrics;
  readonly capacity: number;
  readonly maxTokensLimit: number;
  readonly imageLimits: ImageLimits;
  readonly created = Math.floor(Date.now() / 1000);

  constructor(readonly bundle: SiqvlBundle, readonly opts: ServeOptions) {
    const cfg = bundle.model.config.text;
    this.capacity = Math.min(cfg.maxPositionEmbeddings, opts.maxContext ?? 2048);
    this.maxTokensLimit = opts.maxTokensLimit ?? 256;
    this.imageLimits = { ...DEFAULT_IMAGE_LIMITS, ...opts.images };
    this.metrics = new ServeMetrics(() => ({
      queueDepth: this.engine.queueDepth,
      running: this.engine.running,
    }));
    this.engine = new Engine(bundle.model, {
      maxBatch: opts.maxBatch ?? 16,
      maxQueue: opts.maxQueue ?? 64,
      capacity: this.capacity,
      prefillChunk: opts.prefillChunk,
      padId: bundle.processor.ids.pad,
      stopIds: bundle.processor.stopIds(),
      adapters: opts.adapters,
      metrics: this.metrics,
    });
  }

  /** Model ids served: the base model, then the adapters. */
  modelIds(): string[] {
    return [this.opts.modelName, ...(this.opts.adapters?.names ?? [])];
  }

  async handle(req: Request): Promise<Response> {
    const path = new URL(req.url).pathname;
    const route = ["/v1/chat/completions", "/v1/models", "/health", "/metrics"].includes(path)
      ? path
      : "other";
    let res: Response;
    try {
      res = await this.#route(req, path);
    } catch (e) {
      res = errorResponse(e);
    }
    this.metrics.countRequest(route, res.status);
    return res;
  }

  async #route(req: Request, path: string): Promise<Response> {
    if (path === "/health" && req.method === "GET") return json(200, { status: "ok" });
    const page = path.startsWith("/models/") ? null : await this.opts.web?.(req);
    if (page) return page;
    if (this.opts.apiKey !== undefined) {
      const auth = req.headers.get("authorization") ?? "";
      if (auth !== `Bearer ${this.opts.apiKey}`) {
        throw new ApiError(
          401,
          auth ? "invalid API key" : "missing API key (send Authorization: Bearer <key>)",
          "invalid_request_error",
          "invalid_api_key",
        );
      }
    }
    if (path === "/v1/models" && req.method === "GET") {
      return json(200, {
        object: "list",
        data: this.modelIds().map((id, i) => ({
          id,
          object: "model",
          created: this.created,
          owned_by: "siqvl",
          ...(i > 0 ? { parent: this.opts.modelName } : {}),
          max_model_len: this.capacity,
          architecture: { input_modalities: ["text", "image"], output_modalities: ["text"] },
        })),
      });
    }
    if (path === "/metrics" && req.method === "GET") {
      return new Response(this.metrics.render(), {
        headers: { "content-type": "text/plain; version=0.0.4" },
      });
    }
    if (path === "/v1/chat/completions") {
      if (req.method !== "POST") {
        throw new ApiError(405, `${req.method} is not allowed on ${path}; use POST`);
      }
      return await this.#chat(req);
    }
    const file = path.startsWith("/models/") ? await this.opts.web?.(req) : null;
    if (file) return file;
    throw new ApiError(404, `no route ${req.method} ${path}`, "invalid_request_error", "not_found");
  }

  async #chat(req: Request): Promise<Response> {
    const t0 = performance.now();
    const limit = this.opts.maxBodyBytes ?? 32 * 1024 * 1024;
    const raw = new TextDecoder().decode(
      await readLimited(req.body, limit, req.headers.get("content-length"), () =>
        new ApiError(
          413,
          `the request body exceeds ${limit} bytes`,
          "invalid_request_error",
          "payload_too_large",
        )),
    );
    let body: unknown;
    try {
      body = JSON.parse(raw);
    } catch (e) {
      throw new ApiError(400, `malformed JSON body: ${(e as Error).message}`);
    }
    const r = parseChatRequest(body);
    const adapters = this.opts.adapters;
    let adapter: string | null = null;
    if (r.model !== this.opts.modelName) {
      if (!adapters?.has(r.model)) {
        throw new ApiError(
          404,
          `The model \`${r.model}\` does not exist (served: ${this.modelIds().join(", ")})`,
          "invalid_request_error",
          "model_not_found",
          "model",
        );
      }
      adapter = r.model;
    }
    if (r.n > (this.opts.maxBatch ?? 16)) {
      throw badField("n", `${r.n} exceeds the server's batch size ${this.opts.maxBatch ?? 16}`);
    }
    const { processor } = this.bundle;
    const prompt = buildPrompt(processor, r.messages);
    const maxImages = this.opts.maxImages ?? 4;
    if (prompt.imageUrls.length > maxImages) {
      throw badField(
        "messages",
        `${prompt.imageUrls.length} images in one request; at most ${maxImages} are accepted`,
      );
    }
    const maxTokens = this.#maxTokens(r, prompt.ids.length);
    const images = await Promise.all(
      prompt.imageUrls.map((u) =>
        loadRequestImage(u.url, this.imageLimits, processor.image, u.param)
      ),
    );
    return await this.#generate(req, r, prompt.ids, images, adapter, maxTokens, t0);
  }

  #maxTokens(r: ChatRequest, promptLen: number): number {
    const room = this.capacity - promptLen;
    const tooLong = (n: number) =>
      new ApiError(
        400,
        `request (${promptLen} prompt tokens + ${n} completion tokens) exceeds the available ` +
          `context size (${this.capacity} tokens)`,
        "invalid_request_error",
        "context_length_exceeded",
        "messages",
        { n_prompt_tokens: promptLen, n_ctx: this.capacity },
      );
    if (r.maxTokens !== undefined) {
      if (r.maxTokens > this.maxTokensLimit) {
        throw badField("max_tokens", `${r.maxTokens} exceeds the limit ${this.maxTokensLimit}`);
      }
      if (r.maxTokens > room) throw tooLong(r.maxTokens);
      return r.maxTokens;
    }
    if (room < 1) throw tooLong(1);
    return Math.min(this.maxTokensLimit, room);
  }

  async #generate(
    req: Request,
    r: ChatRequest,
    ids: number[],
    images: Float32Array[],
    adapter: string | null,
    maxTokens: number,
    t0: number,
  ): Promise<Response> {
    const id = `chatcmpl-${crypto.randomUUID().replaceAll("-", "").slice(0, 24)}`;
    const created = Math.floor(Date.now() / 1000);
    const abort = new AbortController();
    req.signal?.addEventListener("abort", () => abort.abort());
    const seed = r.seed ?? Math.floor(Math.random() * 2 ** 31);
    const tok = this.bundle.processor.tokenizer;
    const imageTokens = images.length * this.bundle.processor.tokensPerImage;
    let firstToken = -1;
    const onFirst = () => {
      if (firstToken < 0) {
        firstToken = performance.now();
        this.metrics.ttft.observe((firstToken - t0) / 1000);
      }
    };
    // Streaming: what each choice emits goes to `emit`, set once the stream starts.
    let emit: ((chunk: unknown) => void) | null = null;
    const results: Promise<ChoiceResult>[] = [];
    const choices: ChoiceSpec[] = [];
    for (let i = 0; i < r.n; i++) {
      const text = new TextStream(tok, r.stop);
      let tokens = 0;
      let resolve!: (c: ChoiceResult) => void;
      results.push(new Promise((res) => (resolve = res)));
      const delta = (content: string) => {
        if (content) emit?.(chunkOf(i, { content }, null));
      };
      choices.push({
        sampling: r.temperature === 0
          ? { doSample: false, repetitionPenalty: r.repetitionPenalty }
          : {
            doSample: true,
            temperature: r.temperature,
            topK: r.topK > 0 ? r.topK : undefined,
            topP: r.topP,
            repetitionPenalty: r.repetitionPenalty,
          },
        frequencyPenalty: r.frequencyPenalty,
        presencePenalty: r.presencePenalty,
        seed: i === 0 ? seed : mixSeed(seed, i),
        maxTokens,
        ignoreStopIds: r.ignoreEos,
        onToken: (t) => {
          onFirst();
          tokens++;
          const d = text.push(t);
          delta(d.delta);
          return d.stopped;
        },
        onFinish: (reason, error) => {
          if (reason === "stop" || reason === "length") delta(text.finish());
          const finish = reason;
          emit?.(chunkOf(i, {}, finish === "length" ? "length" : "stop"));
          resolve({ text: text.text, tokens, finish, error });
        },
      });
    }
    const chunkOf = (index: number, delta: Record<string, string>, finish: string | null) => ({
      id,
      object: "chat.completion.chunk",
      created,
      model: r.model,
      system_fingerprint: this.#fingerprint(),
      choices: [{ index, delta, logprobs: null, finish_reason: finish }],
      ...(r.includeUsage ? { usage: null } : {}),
    });
    const usageOf = (done: ChoiceResult[]) => {
      const completion = done.reduce((s, c) => s + c.tokens, 0);
      return {
        prompt_tokens: ids.length,
        completion_tokens: completion,
        total_tokens: ids.length + completion,
        prompt_tokens_details: { cached_tokens: 0, image_tokens: imageTokens },
      };
    };
    const finished = Promise.all(results).then((done) => {
      this.metrics.latency.observe((performance.now() - t0) / 1000);
      return done;
    });
    const submit = () => {
      try {
        this.engine.submit({ promptIds: ids, images, adapter, choices, signal: abort.signal });
      } catch (e) {
        if (e instanceof QueueFullError) {
          this.metrics.rejected++;
          throw new ApiError(429, e.message, "rate_limit_exceeded", "queue_full");
        }
        throw e;
      }
    };

    if (!r.stream) {
      submit();
      const done = await finished;
      const err = done.find((c) => c.finish === "error");
      if (err) throw new ApiError(500, `generation failed: ${err.error?.message}`, "server_error");
      return json(200, {
        id,
        object: "chat.completion",
        created,
        model: r.model,
        system_fingerprint: this.#fingerprint(),
        choices: done.map((c, index) => ({
          index,
          message: { role: "assistant", content: c.text },
          logprobs: null,
          finish_reason: c.finish === "length" ? "length" : "stop",
        })),
        usage: usageOf(done),
      });
    }

    const enc = new TextEncoder();
    let closed = false;
    let ping: ReturnType<typeof setInterval> | undefined;
    const stream = new ReadableStream<Uint8Array>({
      start: (ctl) => {
        const send = (s: string) => {
          if (!closed) ctl.enqueue(enc.encode(s));
        };
        emit = (c) => send(`data: ${JSON.stringify(c)}\n\n`);
        // SSE comments keep a waiting or long-prefilling stream alive (clients ignore them).
        ping = setInterval(() => send(": ping\n\n"), (this.opts.pingSeconds ?? 15) * 1000);
        for (let i = 0; i < r.n; i++) emit(chunkOf(i, { role: "assistant", content: "" }, null));
        finished.then((done) => {
          const err = done.find((c) => c.finish === "error");
          if (err) {
            send(
              `data: ${
                JSON.stringify(
                  new ApiError(500, `generation failed: ${err.error?.message}`, "server_error")
                    .body(),
                )
              }\n\n`,
            );
          } else if (r.includeUsage && !abort.signal.aborted) {
            send(
              `data: ${
                JSON.stringify({ ...chunkOf(0, {}, null), choices: [], usage: usageOf(done) })
              }\n\n`,
            );
          }
          send("data: [DONE]\n\n");
          clearInterval(ping);
          if (!closed) {
            closed = true;
            ctl.close();
          }
        });
      },
      cancel: () => {
        closed = true;
        clearInterval(ping);
        abort.abort();
      },
    });
    submit();
    return new Response(stream, {
      headers: {
        "content-type": "text/event-stream",
        "cache-control": "no-cache",
        connection: "keep-alive",
      },
    });
  }

  #fingerprint(): string {
    return `siqvl-${this.opts.modelName}`;
  }
}

/** Start listening (hostname default 127.0.0.1, port 0 = any free port). */
export function startServer(
  bundle: SiqvlBundle,
  opts: ServeOptions & { host?: string; port?: number; log?: (s: string) => void },
): RunningServer {
  const service = new ChatService(bundle, opts);
  const ctl = new AbortController();
  const server = Deno.serve({
    hostname: opts.host ?? "127.0.0.1",
    port: opts.port ?? 0,
    signal: ctl.signal,
    onListen: () => {},
  }, (req) => service.handle(req));
  const addr = server.addr as Deno.NetAddr;
  const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  return {
    url: `http://${host}:${addr.port}`,
    port: addr.port,
    engine: service.engine,
    metrics: service.metrics,
    shutdown: async () => {
      ctl.abort();
      await service.engine.close();
      await server.finished;
    },
  };
}
