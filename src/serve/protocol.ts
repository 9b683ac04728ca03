// The OpenAI chat-completions request, checked field by field, and the error shape.
//
// Errors are `{"error": {"message", "type", "param", "code"}}` with OpenAI's string codes (or
// null) and the matching HTTP status. Fields we do not implement are ignored, as vLLM does;
// `detail` of an image part is accepted and ignored (fixed-resolution SigLIP).

/** An error answered as OpenAI's error object. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type = "invalid_request_error",
    readonly code: string | null = null,
    readonly param: string | null = null,
    readonly extra: Record<string, unknown> = {},
  ) {
    super(message);
  }

  /** The JSON body. */
  body(): { error: Record<string, unknown> } {
    return {
      error: {
        message: this.message,
        type: this.type,
        param: this.param,
        code: this.code,
        ...this.extra,
      },
    };
  }
}

/** 400 for a bad field. */
export function badField(param: string, message: string): ApiError {
  return new ApiError(400, `${param}: ${message}`, "invalid_request_error", "invalid_value", param);
}

/** One content part of a message. */
export type ContentPart = { type: "text"; text: string } | { type: "image_url"; url: string };

/** A message with its content as parts. */
export interface ParsedMessage {
  role: "system" | "user" | "assistant";
  parts: ContentPart[];
}

/** A validated chat-completions request. */
export interface ChatRequest {
  model: string;
  messages: ParsedMessage[];
  /** max_completion_tokens ?? max_tokens (undefined: up to the server's limit). */
  maxTokens?: number;
  temperature: number;
  topP: number;
  topK: number;
  seed?: number;
  stop: string[];
  frequencyPenalty: number;
  presencePenalty: number;
  repetitionPenalty: number;
  n: number;
  stream: boolean;
  includeUsage: boolean;
  /** vLLM extension: keep generating past the stop ids (up to max_tokens). */
  ignoreEos: boolean;
}

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function optNumber(
  body: Json,
  key: string,
  def: number,
  check: (x: number) => boolean,
  rule: string,
): number {
  const v = body[key];
  if (v === undefined || v === null) return def;
  if (typeof v !== "number" || !Number.isFinite(v)) {
    throw badField(key, `expected a number, got ${JSON.stringify(v)}`);
  }
  if (!check(v)) throw badField(key, `${v} is out of range (${rule})`);
  return v;
}

const isInt = (x: number) => Number.isInteger(x);

function parseContent(v: unknown, where: string): ContentPart[] {
  if (typeof v === "string") return [{ type: "text", text: v }];
  if (v === null || v === undefined) return [];
  if (!Array.isArray(v)) {
    throw badField(where, "expected a string or a list of content parts");
  }
  return v.map((p, j): ContentPart => {
    const at = `${where}[${j}]`;
    if (!isObject(p)) throw badField(at, "expected a content part object");
    if (p.type === "text") {
      if (typeof p.text !== "string") throw badField(`${at}.text`, "expected a string");
      return { type: "text", text: p.text };
    }
    if (p.type === "image_url") {
      const iu = p.image_url;
      const url = typeof iu === "string" ? iu : isObject(iu) ? iu.url : undefined;
      if (typeof url !== "string" || url === "") {
        throw badField(`${at}.image_url.url`, "expected a URL string");
      }
      return { type: "image_url", url };
    }
    throw badField(`${at}.type`, `unsupported content part type ${JSON.stringify(p.type)}`);
  });
}

/** Check a parsed JSON body; throws ApiError(400) naming the first bad field. */
export function parseChatRequest(body: unknown): ChatRequest {
  if (!isObject(body)) throw new ApiError(400, "the request body must be a JSON object");
  if (typeof body.model !== "string" || body.model === "") {
    throw badField("model", "expected a model name string");
  }
  if (!Array.isArray(body.messages) || body.messages.length === 0) {
    throw badField("messages", "expected a non-empty list of messages");
  }
  const messages = body.messages.map((m, i): ParsedMessage => {
    const at = `messages[${i}]`;
    if (!isObject(m)) throw badField(at, "expected a message object");
    const role = m.role === "developer" ? "system" : m.role;
    if (role !== "system" && role !== "user" && role !== "assistant") {
      throw badField(`${at}.role`, `unsupported role ${JSON.stringify(m.role)}`);
    }
    const parts = parseContent(m.content, `${at}.content`);
    if (role !== "user" && parts.some((p) => p.type === "image_url")) {
      throw badField(`${at}.content`, `images are only accepted in user messages`);
    }
    return { role, parts };
  });
  const last = messages[messages.length - 1];
  if (last.role === "assistant") {
    throw badField("messages", "the last message must be from the user or the system");
  }
  const posInt = (x: number) => isInt(x) && x >= 1;
  const mct = optNumber(body, "max_completion_tokens", NaN, posInt, "an integer ≥ 1");
  const mt = optNumber(body, "max_tokens", NaN, posInt, "an integer ≥ 1");
  const maxTokens = !Number.isNaN(mct) ? mct : !Number.isNaN(mt) ? mt : undefined;
  let stop: string[] = [];
  const s = body.stop;
  if (typeof s === "string") stop = [s];
  else if (Array.isArray(s)) {
    if (s.length > 4) throw badField("stop", `at most 4 stop sequences, got ${s.length}`);
    s.forEach((x, i) => {
      if (typeof x !== "string") throw badField(`stop[${i}]`, "expected a string");
    });
    stop = s as string[];
  } else if (s !== undefined && s !== null) throw badField("stop", "expected a string or a list");
  stop = stop.filter((x) => x.length > 0);
  let includeUsage = false;
  const so = body.stream_options;
  if (so !== undefined && so !== null) {
    if (!isObject(so)) throw badField("stream_options", "expected an object");
    if (so.include_usage !== undefined && typeof so.include_usage !== "boolean") {
      throw badField("stream_options.include_usage", "expected a boolean");
    }
    includeUsage = so.include_usage === true;
  }
  const seed = optNumber(body, "seed", NaN, isInt, "an integer");
  for (const key of ["stream", "ignore_eos"]) {
    const x = body[key];
    if (x !== undefined && x !== null && typeof x !== "boolean") {
      throw badField(key, "expected a boolean");
    }
  }
  return {
    model: body.model,
    messages,
    maxTokens,
    temperature: optNumber(body, "temperature", 1, (x) => x >= 0 && x <= 2, "0 to 2"),
    topP: optNumber(body, "top_p", 1, (x) => x > 0 && x <= 1, "in (0, 1]"),
    topK: optNumber(body, "top_k", 0, (x) => isInt(x) && x >= -1, "an integer ≥ 0, or -1"),
    seed: Number.isNaN(seed) ? undefined : seed,
    stop,
    frequencyPenalty: optNumber(body, "frequency_penalty", 0, (x) => x >= -2 && x <= 2, "-2 to 2"),
    presencePenalty: optNumber(body, "presence_penalty", 0, (x) => x >= -2 && x <= 2, "-2 to 2"),
    repetitionPenalty: optNumber(body, "repetition_penalty", 1, (x) => x > 0, "> 0"),
    n: optNumber(body, "n", 1, posInt, "an integer ≥ 1"),
    stream: body.stream === true,
    includeUsage,
    ignoreEos: body.ignore_eos === true,
  };
}
