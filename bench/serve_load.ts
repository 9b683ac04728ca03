// Load test of the OpenAI-compatible server on 127.0.0.1: N concurrent streaming clients (default
// 1, 4, 16, 64) send a bounded number of greedy shapes questions (each with its own image), first
// to a server that decodes one request at a time (max_batch 1), then to the continuous-batching
// server (max_batch 64), in the same process and run. Reports requests/s, output tokens/s, p50 /
// p99 time to first token and latency, and checks every answer: each request's text must equal
// its answer in the first (one-client, one-at-a-time) run — nothing lost, nothing mixed between
// requests — and is scored against the shapes answer.
//
//   deno run -A --unstable-webgpu bench/serve_load.ts --checkpoint DIR [--levels 1,4,16,64]
//     [--requests N (per level; default max(16, clients))] [--max_tokens 8] [--ignore_eos]
//     [--adapters a=DIR,...] [--models demo,a;a (mixes separated by ";": the ids a run's
//     requests cycle through; default the base and every adapter)] [--modes ...]
//
// --ignore_eos (vLLM's extension, as its serving benchmark uses for fixed output lengths) makes
// every answer exactly max_tokens long; the shapes answer is then its first word.

import { parseArgs } from "node:util";
import { Image } from "imagescript";
import { generateShapesSample } from "../src/data/datasets/shapes.ts";
import { Gpu } from "../src/gpu/device.ts";
import { openSiqvl, type SiqvlBundle } from "../src/models/factory.ts";
import { AdapterSet } from "../src/serve/adapters.ts";
import { startServer } from "../src/serve/server.ts";
import { imageDataUrl, streamChat } from "../src/serve/sse_client.ts";

const { values: v } = parseArgs({
  args: Deno.args,
  options: {
    checkpoint: { type: "string" },
    levels: { type: "string", default: "1,4,16,64" },
    requests: { type: "string" },
    max_tokens: { type: "string", default: "8" },
    ignore_eos: { type: "boolean", default: false },
    adapters: { type: "string" },
    models: { type: "string" },
    modes: { type: "string", default: "one-at-a-time,continuous" },
  },
  strict: true,
});
if (!v.checkpoint) throw new Error("--checkpoint DIR is required (e.g. the demo's stage2 folder)");
const levels = v.levels!.split(",").map(Number);
const maxTokens = Number(v.max_tokens);

interface Req {
  url: string;
  question: string;
  answer: string;
}

/** Held-out shapes questions with their images as PNG data URLs. */
async function workload(n: number, size: number): Promise<Req[]> {
  const out: Req[] = [];
  for (let i = 0; i < n; i++) {
    const s = generateShapesSample(9173, i, size);
    const img = new Image(s.image.width, s.image.height);
    for (let p = 0; p < s.image.width * s.image.height; p++) {
      const [r, g, b] = s.image.data.subarray(p * 3, p * 3 + 3);
      img.bitmap.set([r, g, b, 255], p * 4);
    }
    out.push({
      url: imageDataUrl(await img.encode()),
      question: s.question,
      answer: s.answer,
    });
  }
  return out;
}

interface Outcome {
  text: string;
  tokens: number;
  ttft: number;
  latency: number;
  ok: boolean;
}

/** One streaming request; TTFT = first chunk with content or a finish reason. */
async function send(base: string, r: Req, model: string): Promise<Outcome> {
  const t0 = performance.now();
  try {
    const res = await streamChat(`${base}/v1`, {
      model,
      messages: [{
        role: "user",
        content: [{ type: "image_url", image_url: { url: r.url } }, {
          type: "text",
          text: r.question,
        }],
      }],
      temperature: 0,
      max_tokens: maxTokens,
      ignore_eos: v.ignore_eos,
    });
    return {
      text: res.text,
      tokens: res.usage?.completion_tokens ?? 0,
      ttft: res.ttftMs,
      latency: performance.now() - t0,
      ok: res.done,
    };
  } catch (e) {
    return { text: String(e), tokens: 0, ttft: 0, latency: 0, ok: false };
  }
}

function pct(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))] ?? NaN;
}

interface Row {
  mode: string;
  clients: number;
  requests: number;
  seconds: number;
  tokens: number;
  ttft50: number;
  ttft99: number;
  lat50: number;
  lat99: number;
  failed: number;
  mixed: number;
  correct: number;
  meanBatch: number;
}

const ms = (x: number) => (x / 1000).toFixed(3);

function header(): string {
  return "| mode | clients | requests | req/s | output tok/s | TTFT p50 s | TTFT p99 s | " +
    "latency p50 s | latency p99 s | mean decode batch | failed | mixed | correct |\n" +
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|";
}

function tableRow(r: Row): string {
  return `| ${r.mode} | ${r.clients} | ${r.requests} | ${(r.requests / r.seconds).toFixed(2)} | ` +
    `${(r.tokens / r.seconds).toFixed(1)} | ${ms(r.ttft50)} | ${ms(r.ttft99)} | ` +
    `${ms(r.lat50)} | ${ms(r.lat99)} | ${r.meanBatch.toFixed(1)} | ${r.failed} | ${r.mixed} | ` +
    `${r.correct}/${r.requests} |`;
}

const gpu = await Gpu.get();
const bundle: SiqvlBundle = await openSiqvl(gpu, { checkpoint: v.checkpoint });
const adapterSpecs = (v.adapters ?? "").split(",").filter(Boolean).map((s) => {
  const [name, dir] = s.split("=");
  return { name, dir };
});
const adapters = await AdapterSet.load(gpu, bundle.model, adapterSpecs);
const modelName = "demo";
// Model mixes: requests of a run cycle through the ids of one mix.
const mixes = (v.models ?? [modelName, ...adapters.names].join(",")).split(";").map((m) =>
  m.split(",")
);
const most = Math.max(...levels.map((c) => Number(v.requests ?? Math.max(16, c))));
const reqs = await workload(most, bundle.model.config.vision.imageSize);
/** The first answer seen for request i from model m ("i:m"). */
const reference = new Map<string, string>();
const rows: Row[] = [];

// Level by level, each mode on a fresh server (the model is shared), so every level compares the
// two modes back to back; rows are printed as they complete.
console.error(header());
for (const clients of levels) {
  for (const mix of mixes) {
    for (const mode of v.modes!.split(",")) {
      const server = startServer(bundle, {
        modelName,
        maxBatch: mode === "continuous" ? 64 : 1,
        maxQueue: 1024,
        maxTokensLimit: maxTokens,
        maxContext: 256,
        adapters,
      });
      // Warm-up (shader compilation) outside the measurement.
      await send(server.url, reqs[0], mix[0]);
      const n = Number(v.requests ?? Math.max(16, clients));
      const outcomes: Outcome[] = new Array(n);
      let next = 0;
      const b0 = server.metrics.batchSize.sum, c0 = server.metrics.batchSize.count;
      const t0 = performance.now();
      await Promise.all(Array.from({ length: clients }, async () => {
        while (next < n) {
          const i = next++;
          outcomes[i] = await send(server.url, reqs[i], mix[i % mix.length]);
        }
      }));
      const seconds = (performance.now() - t0) / 1000;
      let failed = 0, mixed = 0, correct = 0;
      outcomes.forEach((o, i) => {
        const key = `${i}:${mix[i % mix.length]}`;
        if (!o.ok) failed++;
        else if (!reference.has(key)) reference.set(key, o.text);
        else if (reference.get(key) !== o.text) mixed++;
        // The answer word (with ignore_eos, the text the model adds after its end of turn follows).
        const first = o.text.trim().split(/[^A-Za-z]+/)[0];
        if (o.ok && (v.ignore_eos ? first : o.text.trim()) === reqs[i].answer) correct++;
      });
      const good = outcomes.filter((o) => o.ok);
      const steps = server.metrics.batchSize.count - c0;
      rows.push({
        mode: mixes.length > 1 ? `${mode} (${mix.join("+")})` : mode,
        clients,
        requests: n,
        seconds,
        tokens: good.reduce((s, o) => s + o.tokens, 0),
        ttft50: pct(good.map((o) => o.ttft), 0.5),
        ttft99: pct(good.map((o) => o.ttft), 0.99),
        lat50: pct(good.map((o) => o.latency), 0.5),
        lat99: pct(good.map((o) => o.latency), 0.99),
        failed,
        mixed,
        correct,
        meanBatch: steps ? (server.metrics.batchSize.sum - b0) / steps : 0,
      });
      const r = rows[rows.length - 1];
      console.error(tableRow(r));
      await server.shutdown();
    }
  }
}

console.log(
  `\nserve_load: ${v.checkpoint}, greedy, max_tokens ${maxTokens}` +
    `${v.ignore_eos ? " (ignore_eos)" : ""}, models ${mixes.map((m) => m.join("+")).join("; ")}, ` +
    `streaming clients on 127.0.0.1\n`,
);
console.log(header());
for (const r of rows) console.log(tableRow(r));
const tps = (mode: string, c: number) => {
  const r = rows.find((x) => x.mode === mode && x.clients === c);
  return r ? r.tokens / r.seconds : NaN;
};
for (const c of levels) {
  const ratio = tps("continuous", c) / tps("one-at-a-time", c);
  if (Number.isFinite(ratio)) {
    console.log(`\n${c} clients: continuous batching gives ${ratio.toFixed(2)}× the output tok/s`);
  }
}
adapters.dispose();
bundle.dispose();
