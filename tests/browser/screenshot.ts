// deno task screenshot:web — docs/browser-screenshot.png: the chat page in headless Chromium
// (SwiftShader WebGPU) after loading the demo checkpoint and answering one held-out question.
// Flags: --checkpoint DIR (default: the newest out/demo/runs/*/stage2), --out PATH, --index N.

import { parseArgs } from "node:util";
import { join } from "node:path";
import { DEMO_CONFIG, heldOutSamples } from "../../src/demo/demo.ts";
import type { RgbImage } from "../../src/data/image.ts";
import { webHandler } from "../../src/web/static.ts";
import { Chromium, findChromium } from "./chromium.ts";
import { encodePng, findDemoCheckpoint } from "./run.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

async function main(): Promise<number> {
  const { values: v } = parseArgs({
    args: Deno.args,
    options: {
      checkpoint: { type: "string" },
      out: { type: "string", default: join(ROOT, "docs/browser-screenshot.png") },
      index: { type: "string", default: "3" },
    },
  });
  const checkpoint = v.checkpoint ?? findDemoCheckpoint();
  const chromium = findChromium();
  if (!checkpoint || !chromium) {
    console.error(`screenshot: need a checkpoint (${checkpoint}) and chromium (${chromium})`);
    return 1;
  }
  const files = await Deno.makeTempDir({ prefix: "siqvl-shot-" });
  const s = heldOutSamples(DEMO_CONFIG, Number(v.index) + 1)[Number(v.index)];
  await Deno.writeFile(join(files, "image.png"), await encodePng(s.image as RgbImage));
  const web = webHandler({ models: { "siq-vl-demo": checkpoint }, files: { shot: files } });
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    async (req) => (await web(req)) ?? new Response("not found\n", { status: 404 }),
  );
  const url = `http://127.0.0.1:${server.addr.port}/?model=siq-vl-demo` +
    `&image=/files/shot/image.png&cache=0&question=${encodeURIComponent(s.question)}`;
  const browser = await Chromium.launch(chromium, ["--window-size=1100,720"]);
  try {
    const r = await browser.run<{ ok: boolean; error?: string; answer?: string }>(url, 300_000);
    if (!r.ok) throw new Error(`page: ${r.error}`);
    const png = await browser.screenshot(1100, 720);
    await Deno.writeFile(v.out!, png);
    console.log(`screenshot: ${v.out} (${png.length} bytes): "${s.question}" → "${r.answer}"`);
  } finally {
    await browser.close();
    await server.shutdown();
    await Deno.remove(files, { recursive: true });
  }
  return 0;
}

if (import.meta.main) Deno.exit(await main());
