// The browser's file path, tested in Deno: a checkpoint served by src/web/static.ts and loaded
// through httpFolder (HTTP Range requests, src/io/source_http.ts) gives the same tensors and the
// same greedy answers as the local load; Range edge cases and path escapes; a Cache API store
// makes the second load download nothing; every shader builds on this adapter (naga; the page
// runs the same check under Tint in `deno task test:browser`).

import assert from "node:assert/strict";
import { join } from "node:path";
import { DEMO_CONFIG, heldOutSamples, prepareDemoModels } from "../src/demo/demo.ts";
import type { RgbImage } from "../src/data/image.ts";
import { openSiqvl } from "../src/models/factory.ts";
import { saveSiqvl } from "../src/models/checkpoint.ts";
import { SafetensorsReader } from "../src/io/safetensors.ts";
import { httpFolder } from "../src/io/source_http.ts";
import { openFolderTensors } from "../src/io/reader.ts";
import { webHandler } from "../src/web/static.ts";
import { ask } from "../src/web/ask.ts";
import { filesFolder } from "../src/web/files_folder.ts";
import { checkShaders } from "../src/web/shader_check.ts";
import { loadShaderSources, SHADER_FILES } from "../src/gpu/shaders.ts";
import { gpu, GPU_TEST } from "./util.ts";

async function withServer(
  models: Record<string, string>,
  body: (base: string) => Promise<void>,
): Promise<void> {
  const web = webHandler({ models });
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    async (req) => (await web(req)) ?? new Response("no route\n", { status: 404 }),
  );
  try {
    await body(`http://127.0.0.1:${server.addr.port}`);
  } finally {
    await server.shutdown();
  }
}

// A small random SiQ-VL checkpoint with the demo's tokenizer (no training: answers are noise,
// but deterministic noise, which is all a comparison needs).
async function tinyCheckpoint(dir: string): Promise<string> {
  const g = await gpu();
  const models = await prepareDemoModels(join(dir, "models"), DEMO_CONFIG);
  const b = await openSiqvl(g, { vision: models.vision, text: models.text, seed: 3 });
  const out = join(dir, "ckpt");
  try {
    await saveSiqvl(b.model, out, { processorFrom: models.text });
  } finally {
    b.dispose();
  }
  return out;
}

Deno.test(
  "web: a checkpoint over HTTP Range equals the local load (tensors, answers)",
  GPU_TEST,
  async () => {
    const tmp = await Deno.makeTempDir({ prefix: "siqvl-web-" });
    try {
      const dir = await tinyCheckpoint(tmp);
      const g = await gpu();
      await withServer({ "org/tiny": dir }, async (base) => {
        const folder = httpFolder(`${base}/models/org/tiny`);
        const remote = await openFolderTensors(folder);
        const local = await SafetensorsReader.open(join(dir, "model.safetensors"));
        try {
          assert.deepEqual(remote.keys(), local.keys());
          for (const k of remote.keys().slice(0, 6)) {
            assert.deepEqual(await remote.read(k), await local.read(k), k);
          }
        } finally {
          remote.close();
          local.close();
        }
        const requestsBefore = folder.stats.requests;
        // The same files picked as a hub cache folder (refs/main names the revision to use).
        const picked = [
          { file: new File(["rev1\n"], "main"), path: "models--org--tiny/refs/main" },
          {
            file: new File(["{}"], "config.json"),
            path: "models--org--tiny/snapshots/rev0/config.json",
          },
        ];
        for (const e of Deno.readDirSync(dir)) {
          if (!e.isFile) continue;
          const file = new File([await Deno.readFile(join(dir, e.name))], e.name);
          picked.push({ file, path: `models--org--tiny/snapshots/rev1/${e.name}` });
        }
        const viaHttp = await openSiqvl(g, { checkpoint: folder });
        const viaDisk = await openSiqvl(g, { checkpoint: dir });
        const viaPick = await openSiqvl(g, { checkpoint: await filesFolder(picked) });
        try {
          assert.ok(folder.stats.requests > requestsBefore + 10, "weights came by ranges");
          for (const s of heldOutSamples(DEMO_CONFIG, 3)) {
            const a = await ask(viaHttp, s.image as RgbImage, s.question, { maxNewTokens: 4 });
            const b = await ask(viaDisk, s.image as RgbImage, s.question, { maxNewTokens: 4 });
            const c = await ask(viaPick, s.image as RgbImage, s.question, { maxNewTokens: 4 });
            assert.deepEqual(a.tokens, b.tokens, s.question);
            assert.deepEqual(c.tokens, b.tokens, s.question);
            assert.ok(a.tokens.length > 0);
          }
        } finally {
          viaHttp.dispose();
          viaDisk.dispose();
          viaPick.dispose();
        }
        await assert.rejects(
          () => filesFolder(picked.filter((p) => !p.path.endsWith("refs/main"))),
          /2 snapshots and no refs\/main/,
        );
      });
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  },
);

Deno.test(
  "web: Range requests, 416, path escapes, a second load from the Cache API",
  GPU_TEST,
  async () => {
    const tmp = await Deno.makeTempDir({ prefix: "siqvl-web-" });
    try {
      const dir = await tinyCheckpoint(tmp);
      const bytes = await Deno.readFile(join(dir, "model.safetensors"));
      await withServer({ tiny: dir }, async (base) => {
        const url = `${base}/models/tiny/model.safetensors`;
        const tail = await fetch(url, { headers: { range: "bytes=-8" } });
        assert.equal(tail.status, 206);
        assert.equal(
          tail.headers.get("content-range"),
          `bytes ${bytes.length - 8}-${bytes.length - 1}/${bytes.length}`,
        );
        assert.deepEqual(
          new Uint8Array(await tail.arrayBuffer()),
          bytes.subarray(bytes.length - 8),
        );
        const mid = await fetch(url, { headers: { range: "bytes=3-10" } });
        assert.deepEqual(new Uint8Array(await mid.arrayBuffer()), bytes.subarray(3, 11));
        const past = await fetch(url, { headers: { range: `bytes=${bytes.length}-` } });
        assert.equal(past.status, 416);
        await past.body?.cancel();
        for (
          const bad of [
            "/models/tiny/..%2F..%2Fmodels%2Ftext%2Fconfig.json",
            "/models/tiny/.hidden",
            "/models/nope/config.json",
            "/web/..%2F..%2Fdeno.json",
          ]
        ) {
          const r = await fetch(base + bad);
          assert.equal(r.status, 404, bad);
          await r.body?.cancel();
        }
        const page = await fetch(`${base}/`);
        assert.match(await page.text(), /SiQ-VL/);
        const listed = await (await fetch(`${base}/models.json`)).json();
        assert.deepEqual(listed, { models: ["tiny"] });
        const folder = httpFolder(`${base}/models/tiny/`);
        await assert.rejects(
          () => folder.open("missing.safetensors"),
          /no such file: .*missing\.safetensors/,
        );

        const name = `siqvl-web-test-${Date.now()}`;
        const store = await caches.open(name);
        try {
          const g = await gpu();
          const first = httpFolder(`${base}/models/tiny/`, { cache: store });
          (await openSiqvl(g, { checkpoint: first })).dispose();
          const again = httpFolder(`${base}/models/tiny/`, { cache: store });
          (await openSiqvl(g, { checkpoint: again })).dispose();
          assert.ok(first.stats.bytes >= bytes.length, `first load ${first.stats.bytes} bytes`);
          assert.equal(again.stats.bytes, 0, "the second load downloads nothing");
          assert.ok(again.stats.cacheHits >= 3);
          // A file changed on the server (new ETag) is fetched again; the rest stays cached.
          const cfg = join(dir, "config.json");
          await new Promise((r) => setTimeout(r, 20));
          await Deno.writeTextFile(cfg, await Deno.readTextFile(cfg));
          const third = httpFolder(`${base}/models/tiny/`, { cache: store });
          (await openSiqvl(g, { checkpoint: third })).dispose();
          assert.equal(third.stats.bytes, (await Deno.stat(cfg)).size);
        } finally {
          await caches.delete(name);
        }
      });
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  },
);

Deno.test("web: every shader entry point builds on this adapter", GPU_TEST, async () => {
  const results = await checkShaders((await gpu()).device);
  assert.ok(results.length >= 40, `${results.length} entry points`);
  const bad = results.filter((r) => !r.ok).map((r) => `${r.shader}:${r.entry}: ${r.error}`);
  assert.deepEqual(bad, []);
});

// WebGPU guarantees 256 invocations per workgroup (x, y ≤ 256, z ≤ 64) and no more: SwiftShader,
// Chromium's software adapter, stops there. Sizes named by override/const are read at their
// default value (a kernel passing a larger override must check the adapter's limits itself).
Deno.test("web: every @workgroup_size fits WebGPU's guaranteed limits (256 invocations)", async () => {
  const sources = await loadShaderSources(SHADER_FILES);
  const over: string[] = [];
  for (const [name, code] of sources) {
    const value = (arg: string): number => {
      const t = arg.trim();
      if (/^\d+u?$/.test(t)) return parseInt(t, 10);
      const m = new RegExp(`(?:override|const)\\s+${t}\\s*(?::\\s*\\w+)?\\s*=\\s*(\\d+)`).exec(
        code,
      );
      if (!m) throw new Error(`${name}.wgsl: workgroup size ${t} has no default`);
      return parseInt(m[1], 10);
    };
    for (const m of code.matchAll(/@workgroup_size\(([^)]*)\)/g)) {
      const [x, y = 1, z = 1] = m[1].split(",").filter((s) => s.trim()).map(value);
      if (x * y * z > 256 || x > 256 || y > 256 || z > 64) over.push(`${name}: ${m[0]}`);
    }
  }
  assert.deepEqual(over, []);
});
