// deno task test:browser — the same model in Deno and in headless Chromium, token for token.
//
// Serves the demo's trained checkpoint (--checkpoint DIR; default the newest
// out/demo/runs/*/stage2, running `deno task demo` first when there is none) and held-out
// shapes questions as PNG files from 127.0.0.1, answers them greedily in Deno, then opens
// src/web/check.html in Debian's chromium (headless, SwiftShader WebGPU), which compiles every
// shader with Tint, loads the model by HTTP Range requests, decodes the PNGs with
// createImageBitmap and answers the same questions. Fails unless every shader builds, decoded
// and preprocessed pixels match, and every answer's tokens are identical. Last line:
//   browser: <identical>/<n> answers identical to deno (<adapter>, <tokens/s> tokens/s)
//
// Flags: --checkpoint DIR, --n N (default 24), --max_new_tokens N (default 8), --keep_open
// (serve after the run, for a manual look), --timeout_s S (default 600).

import { parseArgs } from "node:util";
import { join } from "node:path";
import { Image } from "../../src/deps.ts";
import { decodeImage, type RgbImage } from "../../src/data/image.ts";
import { preprocessRgb } from "../../src/data/image_processor.ts";
import { generateShapesSample } from "../../src/data/datasets/shapes.ts";
import { DEMO_CONFIG, heldOutSamples } from "../../src/demo/demo.ts";
import { Gpu } from "../../src/gpu/device.ts";
import { openSiqvl } from "../../src/models/factory.ts";
import { ask, type AskResult } from "../../src/web/ask.ts";
import { digest } from "../../src/web/digest.ts";
import { webHandler } from "../../src/web/static.ts";
import { startServer } from "../../src/serve/server.ts";
import { checkShaders, type ShaderCheck } from "../../src/web/shader_check.ts";
import { Chromium, findChromium, WEBGPU_FLAGS } from "./chromium.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

/** PNG bytes of an RGB image. */
export async function encodePng(img: RgbImage): Promise<Uint8Array> {
  const im = new Image(img.width, img.height);
  for (let i = 0; i < img.width * img.height; i++) {
    im.bitmap.set([img.data[i * 3], img.data[i * 3 + 1], img.data[i * 3 + 2], 255], i * 4);
  }
  return await im.encode();
}

/** The newest demo stage-2 checkpoint under out/demo/runs, or null. */
export function findDemoCheckpoint(root = join(ROOT, "out/demo/runs")): string | null {
  let best: { dir: string; mtime: number } | null = null;
  try {
    for (const e of Deno.readDirSync(root)) {
      const dir = join(root, e.name, "stage2");
      try {
        const st = Deno.statSync(join(dir, "config.json"));
        const mtime = st.mtime?.getTime() ?? 0;
        if (!best || mtime > best.mtime) best = { dir, mtime };
      } catch { /* not a finished stage-2 run */ }
    }
  } catch { /* no runs */ }
  return best?.dir ?? null;
}

/** `node:` specifiers in the static imports reachable from `entry` in a bundle folder. */
export function nodeImports(dir: string, entry: string): string[] {
  const seen = new Set<string>(), found = new Set<string>();
  const visit = (file: string) => {
    if (seen.has(file)) return;
    seen.add(file);
    const code = Deno.readTextFileSync(join(dir, file));
    for (const m of code.matchAll(/^(?:import|export)\b[^;]*?["']([^"']+)["']/gms)) {
      if (m[1].startsWith("node:")) found.add(m[1]);
      else if (m[1].startsWith("./")) visit(m[1].slice(2));
    }
  };
  visit(entry);
  return [...found];
}

interface PageResult {
  ok: boolean;
  error?: string;
  adapter: string;
  description: string;
  shaderF16: boolean;
  limits: { maxComputeInvocationsPerWorkgroup: number };
  shaders: ShaderCheck[];
  loadSeconds: number;
  network: { requests: number; bytes: number; cacheHits: number };
  pixels: { url: string; rgb: string; input: string; width: number; height: number }[];
  answers: { id: string; tokens: number[]; text: string }[];
  api: { id: string; text: string }[];
  cache: {
    firstBytes: number;
    reloadBytes: number;
    reloadCacheHits: number;
    reloadSeconds: number;
  };
  tokensPerSecond: number;
}

async function main(): Promise<number> {
  const { values: v } = parseArgs({
    args: Deno.args,
    options: {
      checkpoint: { type: "string" },
      n: { type: "string", default: "24" },
      max_new_tokens: { type: "string", default: "8" },
      timeout_s: { type: "string", default: "600" },
      keep_open: { type: "boolean", default: false },
    },
  });
  const n = Number(v.n), maxNewTokens = Number(v.max_new_tokens);
  const chromium = findChromium();
  if (!chromium) {
    console.error(
      "browser: no chromium found (apt-get install -y chromium; or set CHROMIUM=/path); " +
        ".ci/install.sh installs it",
    );
    return 1;
  }
  let checkpoint = v.checkpoint ?? findDemoCheckpoint();
  if (!checkpoint) {
    try {
      Deno.statSync(join(ROOT, "out/demo"));
      console.error(
        "browser: out/demo holds no finished stage-2 checkpoint (a demo still running?); " +
          "pass --checkpoint DIR or let `deno task demo` finish",
      );
      return 1;
    } catch { /* no out/demo: train it */ }
    console.log("[browser] no demo checkpoint (out/demo): running `deno task demo` first");
    const st = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--unstable-webgpu", join(ROOT, "cli/demo.ts")],
      cwd: ROOT,
      stdout: "inherit",
      stderr: "inherit",
    }).output();
    checkpoint = findDemoCheckpoint();
    if (!st.success || !checkpoint) {
      console.error("browser: the demo did not produce a checkpoint");
      return 1;
    }
  }
  console.log(`[browser] checkpoint ${checkpoint}; chromium ${chromium}`);

  // Held-out questions as PNG files, and images of other sizes for the resize check.
  const files = await Deno.makeTempDir({ prefix: "siqvl-browser-" });
  const samples = heldOutSamples(DEMO_CONFIG, n);
  const listed: { id: string; question: string; image: string }[] = [];
  for (const s of samples) {
    const png = await encodePng(s.image as RgbImage);
    await Deno.writeFile(join(files, `${s.id}.png`), png);
    listed.push({ id: s.id, question: s.question, image: `/files/samples/${s.id}.png` });
  }
  await Deno.writeTextFile(join(files, "samples.json"), JSON.stringify(listed));
  const resizeSizes = [64, 40, 97];
  const pixelUrls: string[] = [];
  for (const [i, size] of resizeSizes.entries()) {
    const img = generateShapesSample(7, i, size).image;
    await Deno.writeFile(join(files, `resize_${size}.png`), await encodePng(img));
    pixelUrls.push(`/files/samples/resize_${size}.png`);
  }
  await Deno.writeTextFile(join(files, "pixels.json"), JSON.stringify(pixelUrls));

  // Deno's answers for the same files.
  console.log(`[browser] deno: ${n} held-out questions, greedy, max ${maxNewTokens} new tokens`);
  const gpu = await Gpu.get();
  const denoShaders = await checkShaders(gpu.device);
  const t0 = performance.now();
  const bundle = await openSiqvl(gpu, { checkpoint });
  const denoLoad = (performance.now() - t0) / 1000;
  const denoPixels: { rgb: string; input: string }[] = [];
  for (const url of pixelUrls) {
    const img = await decodeImage(await Deno.readFile(join(files, url.split("/").pop()!)));
    denoPixels.push({
      rgb: digest(img.data),
      input: digest(preprocessRgb(img, bundle.processor.image)),
    });
  }
  const denoAnswers: AskResult[] = [];
  let denoTokens = 0, denoSeconds = 0;
  for (const s of listed) {
    const img = await decodeImage(await Deno.readFile(join(files, `${s.id}.png`)));
    const r = await ask(bundle, img, s.question, { maxNewTokens });
    denoTokens += r.tokens.length;
    denoSeconds += r.prefillSeconds + r.decodeSeconds;
    denoAnswers.push(r);
  }
  const denoTps = denoSeconds > 0 ? denoTokens / denoSeconds : 0;
  console.log(
    `[browser] deno (${gpu.adapterDescription}): shaders ${
      denoShaders.filter((s) => s.ok).length
    }/` +
      `${denoShaders.length} built, load ${denoLoad.toFixed(2)} s, ${denoTps.toFixed(1)} tokens/s`,
  );

  // A browser cannot load node: modules: name any the page's static import graph still has.
  const leaks = nodeImports(join(ROOT, "src/web/dist"), "check_page.js");
  if (leaks.length) {
    console.error(
      `browser: the page's bundle imports ${leaks.join(", ")}; a module the page needs imports ` +
        "a Node built-in (map it in src/web/import_map.json or load it on demand)",
    );
    bundle.dispose();
    return 1;
  }

  // The page, served with the API (the same model answers the page's "on the server" questions).
  const web = webHandler({ models: { demo: checkpoint }, files: { samples: files } });
  const server = startServer(bundle, { modelName: "demo", web, maxBatch: 4 });
  const cleanup = async () => {
    await server.shutdown();
    bundle.dispose();
    await Deno.remove(files, { recursive: true });
  };
  const base = server.url;
  console.log(`[browser] chromium: ${base}/web/check.html`);
  const url = `${base}/web/check.html?model=/models/demo/&samples=/files/samples/samples.json` +
    `&pixels=/files/samples/pixels.json&max_new_tokens=${maxNewTokens}&api=demo&api_n=4`;
  let failures = 0;
  let page: PageResult;
  const browser = await Chromium.launch(chromium);
  try {
    const tp = performance.now();
    page = await browser.run<PageResult>(url, Number(v.timeout_s) * 1000);
    console.log(`[browser] page finished in ${((performance.now() - tp) / 1000).toFixed(1)} s`);
  } finally {
    await browser.close();
  }
  if (!page.ok) {
    console.error(
      `browser: the page failed: ${page.error}\n${browser.console.slice(-20).join("\n")}`,
    );
    await cleanup();
    return 1;
  }
  const bad = [
    ...denoShaders.map((s) => ({ ...s, where: "deno" })),
    ...page.shaders.map((s) => ({ ...s, where: "chromium" })),
  ]
    .filter((s) => !s.ok);
  for (const s of bad) {
    console.error(`  shader ${s.shader}:${s.entry} fails in ${s.where}: ${s.error}`);
  }
  failures += bad.length;
  console.log(
    `[browser] chromium (${page.adapter}${page.description ? `, ${page.description}` : ""}, ` +
      `shader-f16 ${page.shaderF16 ? "on" : "off"}, max invocations ` +
      `${page.limits.maxComputeInvocationsPerWorkgroup}): shaders ` +
      `${page.shaders.filter((s) => s.ok).length}/${page.shaders.length} built, load ` +
      `${page.loadSeconds.toFixed(2)} s (${page.network.requests} requests, ` +
      `${page.network.bytes} bytes), ${page.tokensPerSecond.toFixed(1)} tokens/s`,
  );
  page.pixels.forEach((p, i) => {
    const d = denoPixels[i];
    const same = p.rgb === d.rgb && p.input === d.input;
    console.log(
      `  pixels ${p.width}x${p.height}: decode ${p.rgb === d.rgb ? "equal" : "DIFFERENT"}, ` +
        `resize+normalise ${p.input === d.input ? "equal" : "DIFFERENT"}`,
    );
    if (!same) failures++;
  });
  let identical = 0;
  denoAnswers.forEach((d, i) => {
    const p = page.answers[i];
    const same = p !== undefined && p.tokens.join(",") === d.tokens.join(",");
    if (same) identical++;
    else {
      console.log(
        `  DIFFERENT ${listed[i].id} "${listed[i].question}": deno [${d.tokens}] "${d.text}" vs ` +
          `browser [${p?.tokens ?? "-"}] "${p?.text ?? "-"}"`,
      );
    }
  });
  const c = page.cache;
  console.log(
    `  Cache API: first load ${c.firstBytes} bytes, reload ${c.reloadBytes} bytes ` +
      `(${c.reloadCacheHits} files from the cache, ${c.reloadSeconds.toFixed(2)} s)`,
  );
  if (c.firstBytes === 0 || c.reloadBytes !== 0) failures++;
  page.api.forEach((a, i) => {
    const same = a.text === denoAnswers[i].text;
    console.log(`  server API from the page: "${a.text}" ${same ? "=" : "DIFFERENT from"} deno`);
    if (!same) failures++;
  });
  // Without --enable-unsafe-webgpu headless Chromium offers no adapter: the page must say so.
  const plain = await Chromium.launch(
    chromium,
    [],
    WEBGPU_FLAGS.filter((f) => !f.includes("webgpu")),
  );
  try {
    await plain.run(`${base}/`, 60_000);
    const status = await plain.evaluate<string>("document.getElementById('status').textContent");
    const clear = /WebGPU/.test(status) && /server \(API\)/.test(status);
    console.log(`  page without WebGPU: "${status}"`);
    if (!clear) failures++;
  } finally {
    await plain.close();
  }
  if (v.keep_open) {
    console.log(`[browser] serving ${base}/ (Ctrl-C to stop)`);
    await new Promise(() => {});
  }
  await cleanup();
  if (identical !== denoAnswers.length) failures++;
  console.log(
    `browser: ${identical}/${denoAnswers.length} answers identical to deno (${page.adapter}, ` +
      `${page.tokensPerSecond.toFixed(1)} tokens/s)`,
  );
  return failures === 0 ? 0 : 1;
}

if (import.meta.main) Deno.exit(await main());
