// deno task serve --checkpoint DIR [--port 8000] [--adapters name=DIR,...] [flags]
// An OpenAI-compatible chat-completions server (images, streaming, continuous batching, LoRA
// adapters chosen by the request's `model`), bound to 127.0.0.1 unless --host says otherwise.

import { intFlag, parseFlags } from "./flags.ts";
import { basename } from "node:path";
import { announce } from "../src/gpu/announce.ts";
import { openSiqvl, pinWeights } from "../src/models/factory.ts";
import { AdapterSet } from "../src/serve/adapters.ts";
import { type RunningServer, startServer } from "../src/serve/server.ts";
import { webHandler } from "../src/web/static.ts";

const HELP = `Usage: deno task serve --checkpoint DIR [flags]

OpenAI-compatible server: POST /v1/chat/completions (text and image_url parts, stream),
GET /v1/models, GET /health, GET /metrics.

  --checkpoint DIR            SiQ-VL checkpoint directory (or hub id in the local cache)
  --host H                    default 127.0.0.1
  --port N                    default 8000 (0: any free port)
  --served_model_name NAME    the base model's id (default: the checkpoint's folder name)
  --adapters name=DIR,...     PEFT LoRA adapters, each served as model "name"
  --max_batch N               sequences decoded together (default 16)
  --max_queue N               sequences allowed to wait; more get 429 (default 64)
  --max_tokens_limit N        largest max_tokens, and the default (default 256)
  --max_context N             KV slots per sequence, prompt + answer (default 2048 or less)
  --prefill_chunk N           prompt positions (rows × positions) prefilled per scheduler step
                              between decode steps (default 512)
  --api_key KEY               require Authorization: Bearer KEY (not for /health)
  --max_images N              images per request (default 4)
  --max_image_pixels N        width × height of one image (default 40000000)
  --max_body_bytes N          request body size (default 33554432)
  --allow_remote_images       fetch http(s) image URLs (default: data: URLs only)
  --image_fetch_timeout_ms N  remote image time limit (default 5000)
  --help`;

const OPTIONS = {
  checkpoint: { type: "string" },
  host: { type: "string" },
  port: { type: "string" },
  served_model_name: { type: "string" },
  adapters: { type: "string" },
  max_batch: { type: "string" },
  max_queue: { type: "string" },
  max_tokens_limit: { type: "string" },
  max_context: { type: "string" },
  prefill_chunk: { type: "string" },
  api_key: { type: "string" },
  max_images: { type: "string" },
  max_image_pixels: { type: "string" },
  max_body_bytes: { type: "string" },
  allow_remote_images: { type: "boolean" },
  image_fetch_timeout_ms: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

/** `name=DIR,name2=DIR2` → pairs. */
export function parseAdapters(spec: string | undefined): { name: string; dir: string }[] {
  if (!spec) return [];
  return spec.split(",").filter((s) => s.trim()).map((item) => {
    const eq = item.indexOf("=");
    const name = item.slice(0, eq).trim(), dir = item.slice(eq + 1).trim();
    if (eq <= 0 || !name || !dir) {
      throw new Error(`--adapters: "${item}" is not name=DIR`);
    }
    return { name, dir };
  });
}

/** Parse flags, load the model and start the server (returns it; --help returns null). */
export async function serveMain(
  argv: string[],
  log: (s: string) => void = console.error,
): Promise<RunningServer | null> {
  const v = parseFlags(argv, OPTIONS);
  if (v.help) {
    console.log(HELP);
    return null;
  }
  if (!v.checkpoint) throw new Error("--checkpoint is required; see --help");
  const adapters = parseAdapters(v.adapters);
  const opts = {
    host: v.host ?? "127.0.0.1",
    port: intFlag("port", v.port, 8000, 0),
    modelName: v.served_model_name ?? basename(v.checkpoint.replace(/\/+$/, "")),
    maxBatch: intFlag("max_batch", v.max_batch, 16, 1),
    maxQueue: intFlag("max_queue", v.max_queue, 64, 0),
    maxTokensLimit: intFlag("max_tokens_limit", v.max_tokens_limit, 256, 1),
    maxContext: v.max_context === undefined
      ? undefined
      : intFlag("max_context", v.max_context, 0, 2),
    prefillChunk: intFlag("prefill_chunk", v.prefill_chunk, 512, 1),
    apiKey: v.api_key,
    maxImages: intFlag("max_images", v.max_images, 4, 0),
    maxBodyBytes: intFlag("max_body_bytes", v.max_body_bytes, 32 * 1024 * 1024, 1),
    images: {
      maxPixels: intFlag("max_image_pixels", v.max_image_pixels, 40_000_000, 1),
      allowRemote: v.allow_remote_images ?? false,
      fetchTimeoutMs: intFlag("image_fetch_timeout_ms", v.image_fetch_timeout_ms, 5000, 1),
    },
  };
  if (adapters.some((a) => a.name === opts.modelName)) {
    throw new Error(
      `--adapters: an adapter may not be named like the base model "${opts.modelName}"`,
    );
  }
  const gpu = await announce(undefined, log);
  const bundle = await openSiqvl(gpu, { checkpoint: v.checkpoint }, { log });
  const set = await AdapterSet.load(gpu, bundle.model, adapters);
  // After the adapters are merged/loaded: the base weights are final, stage them once.
  pinWeights(bundle.model);
  // The web page at / (src/web/), loading the served checkpoint from /models/<name>/.
  const web = webHandler({ models: { [opts.modelName]: bundle.tokenizerFrom } });
  const server = startServer(bundle, { ...opts, adapters: set, log, web });
  log(
    `[serve] ${opts.modelName}${set.names.length ? ` + adapters ${set.names.join(", ")}` : ""} ` +
      `on ${server.url}/v1 (max_batch ${opts.maxBatch}, max_queue ${opts.maxQueue})`,
  );
  return server;
}

if (import.meta.main) {
  let server: RunningServer | null = null;
  try {
    server = await serveMain(Deno.args);
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    Deno.exit(1);
  }
  if (server) {
    const stop = async () => {
      await server!.shutdown();
      Deno.exit(0);
    };
    Deno.addSignalListener("SIGINT", stop);
    Deno.addSignalListener("SIGTERM", stop);
  }
}
