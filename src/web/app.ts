/// <reference lib="dom" />
// The chat page (src/web/index.html): pick a checkpoint (one the server offers at /models/, or
// a folder picked from disk), drop an image, ask; answers stream token by token, computed on
// this browser's WebGPU with the library's own model code, or by the server's OpenAI-compatible
// API. Query parameters model=<id>&image=<url>&question=<text> load, ask and publish
// `window.__result` when done (how docs/browser-screenshot.png is made).

import {
  ask,
  decodeInBrowser,
  filesFolder,
  Gpu,
  httpFolder,
  type ModelFolder,
  openSiqvl,
  type SiqvlBundle,
} from "./main.ts";
import type { RgbImage } from "../data/image.ts";
import { askServer } from "./api_client.ts";
import { openFolderTensors } from "../io/reader.ts";

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const ui = {
  adapter: $("adapter"),
  model: $<HTMLSelectElement>("model"),
  folder: $<HTMLInputElement>("folder"),
  cache: $<HTMLInputElement>("cache"),
  load: $<HTMLButtonElement>("load"),
  bar: $("bar"),
  status: $("status"),
  drop: $("drop"),
  preview: $<HTMLImageElement>("preview"),
  image: $<HTMLInputElement>("image"),
  log: $("log"),
  form: $<HTMLFormElement>("ask"),
  question: $<HTMLInputElement>("question"),
  send: $<HTMLButtonElement>("send"),
  speed: $("speed"),
};

let gpu: Gpu | null = null;
let gpuError = "";
let bundle: SiqvlBundle | null = null;
let picked: File[] | null = null;
let imageBlob: Blob | null = null;
let image: RgbImage | null = null;

const mode = () =>
  (document.querySelector('input[name="mode"]:checked') as HTMLInputElement).value as
    | "webgpu"
    | "api";

function setStatus(text: string, error = false) {
  ui.status.textContent = text;
  ui.status.className = error ? "error" : "muted";
}

async function startGpu(): Promise<void> {
  if (!("gpu" in navigator)) {
    gpuError = "WebGPU is not available in this browser (navigator.gpu is missing; it needs " +
      "a secure context: https or http://127.0.0.1). Use “on the server (API)”.";
  } else if (!(await navigator.gpu.requestAdapter())) {
    gpuError = "WebGPU is present but this browser offers no adapter (no supported GPU, or it is " +
      "blocklisted; Chromium without a GPU needs --enable-unsafe-webgpu). Use “on the server (API)”.";
  } else {
    try {
      gpu = await Gpu.get();
      const i = gpu.adapter.info;
      const name = i.description || [i.vendor, i.architecture].filter(Boolean).join(" ") ||
        "unknown adapter";
      ui.adapter.textContent = `WebGPU: ${name}${gpu.isFallbackAdapter ? " (software)" : ""}` +
        ` · max buffer ${Math.round(gpu.limits.maxStorageBufferBindingSize / 2 ** 20)} MiB` +
        ` · shader-f16 ${gpu.features.shaderF16 ? "yes" : "no (f32 math)"}`;
      return;
    } catch (e) {
      gpuError = `WebGPU has no usable adapter here: ${(e as Error).message}. ` +
        "Use “on the server (API)”.";
    }
  }
  ui.adapter.textContent = "WebGPU: unavailable";
  setStatus(gpuError, true);
}

async function listModels(): Promise<void> {
  try {
    const { models } = await (await fetch("/models.json")).json() as { models: string[] };
    for (const id of models) ui.model.add(new Option(id, id));
  } catch { /* a static server without models */ }
  if (ui.model.options.length === 0) ui.model.add(new Option("(none served)", ""));
}

async function folderFor(id: string): Promise<ModelFolder> {
  if (picked) {
    return await filesFolder(
      picked.map((f) => ({ file: f, path: f.webkitRelativePath || f.name })),
    );
  }
  return httpFolder(new URL(`/models/${id}/`, location.href), {
    cache: ui.cache.checked && "caches" in globalThis ? cachesOpen : undefined,
    onProgress: (_name, loaded, total) => {
      ui.bar.style.width = `${Math.min(100, (100 * loaded) / Math.max(1, total))}%`;
    },
  });
}
let cachesOpen: Cache | undefined;

async function loadModel(): Promise<void> {
  if (mode() === "api") {
    setStatus(`Answers come from the server's /v1/chat/completions (model ${ui.model.value}).`);
    return;
  }
  if (!gpu) {
    setStatus(gpuError || "WebGPU is not ready.", true);
    return;
  }
  ui.load.disabled = true;
  bundle?.dispose();
  bundle = null;
  ui.bar.style.width = "0";
  if (ui.cache.checked && "caches" in globalThis) cachesOpen = await caches.open("siqvl-weights");
  const t0 = performance.now();
  const folder = await folderFor(ui.model.value);
  setStatus(`Loading ${folder.path} …`);
  try {
    const tooBig = await largestTensorOver(folder, gpu.limits.maxStorageBufferBindingSize);
    if (tooBig) throw new Error(tooBig);
    bundle = await openSiqvl(gpu, { checkpoint: folder });
    const s = (performance.now() - t0) / 1000;
    const stats = (folder as { stats?: { bytes: number; cacheHits: number } }).stats;
    const net = stats
      ? `, ${
        (stats.bytes / 2 ** 20).toFixed(2)
      } MiB downloaded, ${stats.cacheHits} files from the cache`
      : "";
    ui.bar.style.width = "100%";
    const c = bundle.model.config;
    setStatus(
      `Loaded in ${s.toFixed(2)} s${net}. Vision ${c.vision.imageSize}px, text ` +
        `${c.text.numHiddenLayers} layers × ${c.text.hiddenSize}.`,
    );
  } catch (e) {
    const l = gpu.limits;
    setStatus(
      `Could not load the model on this adapter (max buffer ${l.maxBufferSize} B, max storage ` +
        `binding ${l.maxStorageBufferBindingSize} B, ${l.maxComputeInvocationsPerWorkgroup} ` +
        `invocations per workgroup): ${(e as Error).message}`,
      true,
    );
  } finally {
    ui.load.disabled = false;
  }
}

// The model does not fit when one weight, widened to f32, exceeds what a shader may bind.
async function largestTensorOver(folder: ModelFolder, limit: number): Promise<string | null> {
  const reader = await openFolderTensors(folder);
  try {
    for (const name of reader.keys()) {
      const bytes = 4 * reader.info(name).shape.reduce((a, b) => a * b, 1);
      if (bytes > limit) {
        return `the model does not fit this adapter: weight ${name} needs ` +
          `${(bytes / 2 ** 20).toFixed(0)} MiB as f32, but a shader may bind at most ` +
          `${(limit / 2 ** 20).toFixed(0)} MiB here`;
      }
    }
    return null;
  } finally {
    reader.close();
  }
}

async function setImage(blob: Blob): Promise<void> {
  try {
    image = await decodeInBrowser(blob);
    imageBlob = blob;
    ui.preview.src = URL.createObjectURL(blob);
    ui.preview.className = "shown";
  } catch (e) {
    setStatus((e as Error).message, true);
  }
}

function message(role: "user" | "model", text: string): HTMLElement {
  const div = document.createElement("div");
  div.className = `msg ${role}`;
  div.textContent = text;
  ui.log.append(div);
  return div;
}

function note(el: HTMLElement, text: string) {
  const small = document.createElement("small");
  small.textContent = text;
  el.append(small);
}

async function askHere(question: string, out: HTMLElement): Promise<number> {
  if (!bundle) throw new Error("load a model first");
  if (!image) throw new Error("choose an image first");
  const r = await ask(bundle, image, question, {
    maxNewTokens: 32,
    onToken: (_t, text) => (out.textContent = text),
  });
  out.textContent = r.text;
  note(out, `${r.tokens.length} tokens · ${r.tokensPerSecond.toFixed(1)} tokens/s · WebGPU`);
  return r.tokensPerSecond;
}

async function askOnServer(question: string, out: HTMLElement): Promise<number> {
  if (!imageBlob) throw new Error("choose an image first");
  const r = await askServer(location.origin, ui.model.value, imageBlob, question, {
    maxTokens: 32,
    onText: (text) => (out.textContent = text),
  });
  out.textContent = r.text;
  const tps = r.chunks / r.seconds;
  note(out, `${r.chunks} tokens · ${tps.toFixed(1)} tokens/s · server API`);
  return tps;
}

async function send(question: string): Promise<string> {
  message("user", question);
  const out = message("model", "…");
  ui.send.disabled = true;
  try {
    const tps = mode() === "api" ? await askOnServer(question, out) : await askHere(question, out);
    ui.speed.textContent = `last answer: ${tps.toFixed(1)} tokens/s (${mode()})`;
    return out.firstChild?.textContent ?? "";
  } catch (e) {
    out.textContent = (e as Error).message;
    out.classList.add("error");
    throw e;
  } finally {
    ui.send.disabled = false;
  }
}

function wire(): void {
  ui.load.onclick = () => loadModel();
  ui.folder.onchange = () => {
    picked = ui.folder.files?.length ? [...ui.folder.files] : null;
    if (picked) setStatus(`Picked ${picked.length} files; press “Load model”.`);
  };
  ui.image.onchange = () => ui.image.files?.[0] && setImage(ui.image.files[0]);
  ui.drop.ondragover = (e) => {
    e.preventDefault();
    ui.drop.classList.add("over");
  };
  ui.drop.ondragleave = () => ui.drop.classList.remove("over");
  ui.drop.ondrop = (e) => {
    e.preventDefault();
    ui.drop.classList.remove("over");
    const f = e.dataTransfer?.files?.[0];
    if (f) setImage(f);
  };
  ui.form.onsubmit = (e) => {
    e.preventDefault();
    const q = ui.question.value.trim();
    if (q) send(q).catch(() => {});
    ui.question.value = "";
  };
}

async function main(): Promise<void> {
  wire();
  await Promise.all([startGpu(), listModels()]);
  const q = new URLSearchParams(location.search);
  if (!q.get("question")) return;
  // Scripted run: model=<id>&image=<url>&question=<text>.
  if (q.get("model")) ui.model.value = q.get("model")!;
  ui.cache.checked = q.get("cache") !== "0";
  await loadModel();
  if (!bundle) throw new Error(ui.status.textContent ?? "no model");
  await setImage(await (await fetch(q.get("image")!)).blob());
  const answer = await send(q.get("question")!);
  return void ((globalThis as { __answer?: string }).__answer = answer);
}

(globalThis as { __result?: unknown }).__result = main().then(
  () => ({ ok: true, answer: (globalThis as { __answer?: string }).__answer }),
  (e) => ({ ok: false, error: (e as Error).message }),
);
