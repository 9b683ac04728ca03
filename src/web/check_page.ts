/// <reference lib="dom" />
// The page `deno task test:browser` opens (src/web/check.html): compile every shader, load the
// model from the server by HTTP Range requests, answer the given questions greedily, and publish
// everything as `window.__result` for the driver (tests/browser/run.ts) to compare with Deno.
//
// Query: ?model=<folder URL>&samples=<JSON URL of [{id, question, image}]>&max_new_tokens=N
//        &pixels=<JSON URL of [image URLs]> (decode + preprocess digests)
//        &api=<model id> (also ask the first api_n questions through the server's API)
// It also loads the model twice through one Cache API store: the second load must download
// nothing (a page reload with cached weights).

import {
  ask,
  askServer,
  checkShaders,
  decodeInBrowser,
  digest,
  Gpu,
  httpFolder,
  openSiqvl,
  preprocessRgb,
} from "./main.ts";

interface Sample {
  id: string;
  question: string;
  image: string;
}

async function run() {
  const q = new URLSearchParams(location.search);
  const gpu = await Gpu.get();
  const info = gpu.adapter.info;
  const adapter = info.architecture || info.description || info.vendor || "unknown";
  const shaders = await checkShaders(gpu.device);
  const t0 = performance.now();
  const folder = httpFolder(new URL(q.get("model")!, location.href));
  const bundle = await openSiqvl(gpu, { checkpoint: folder });
  const loadSeconds = (performance.now() - t0) / 1000;
  const pixels: { url: string; rgb: string; input: string; width: number; height: number }[] = [];
  if (q.get("pixels")) {
    for (const url of await (await fetch(q.get("pixels")!)).json() as string[]) {
      const img = await decodeInBrowser(await (await fetch(url)).blob());
      const input = preprocessRgb(img, bundle.processor.image);
      pixels.push({ url, rgb: digest(img.data), input: digest(input), ...size(img) });
    }
  }
  const samples = await (await fetch(q.get("samples")!)).json() as Sample[];
  const maxNewTokens = Number(q.get("max_new_tokens") ?? 8);
  const answers = [];
  let tokens = 0, seconds = 0;
  for (const s of samples) {
    const img = await decodeInBrowser(await (await fetch(s.image)).blob());
    const r = await ask(bundle, img, s.question, { maxNewTokens });
    tokens += r.tokens.length;
    seconds += r.prefillSeconds + r.decodeSeconds;
    answers.push({ id: s.id, tokens: r.tokens, text: r.text });
  }
  bundle.dispose();
  const cache = await cachedReload(folder.path);
  const api = [];
  if (q.get("api")) {
    for (const s of samples.slice(0, Number(q.get("api_n") ?? 4))) {
      const blob = await (await fetch(s.image)).blob();
      const r = await askServer(location.origin, q.get("api")!, blob, s.question, {
        maxTokens: maxNewTokens,
      });
      api.push({ id: s.id, text: r.text });
    }
  }
  return {
    ok: true,
    adapter,
    description: info.description,
    shaderF16: gpu.features.shaderF16,
    limits: gpu.limits,
    shaders,
    loadSeconds,
    network: folder.stats,
    pixels,
    answers,
    api,
    cache,
    tokensPerSecond: seconds > 0 ? tokens / seconds : 0,
  };
}

// Load twice through a fresh Cache API store; the second load's network bytes must be 0.
async function cachedReload(url: string) {
  const name = `siqvl-check-${Date.now()}`;
  const store = await caches.open(name);
  try {
    const gpu = await Gpu.get();
    const first = httpFolder(url, { cache: store });
    (await openSiqvl(gpu, { checkpoint: first })).dispose();
    const t0 = performance.now();
    const again = httpFolder(url, { cache: store });
    (await openSiqvl(gpu, { checkpoint: again })).dispose();
    return {
      firstBytes: first.stats.bytes,
      reloadBytes: again.stats.bytes,
      reloadCacheHits: again.stats.cacheHits,
      reloadSeconds: (performance.now() - t0) / 1000,
    };
  } finally {
    await caches.delete(name);
  }
}

function size(img: { width: number; height: number }) {
  return { width: img.width, height: img.height };
}

(globalThis as { __result?: unknown }).__result = run().catch((e) => ({
  ok: false,
  error: `${(e as Error).message}\n${(e as Error).stack ?? ""}`,
}));
