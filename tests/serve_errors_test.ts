// The server's refusals over raw HTTP, each in OpenAI's error shape with the right status and a
// message naming the field: auth (401), malformed JSON and bad types (400), unknown model (404),
// too many images, an undecodable image and an image over the pixel limit (checked from its
// header, 400), a body over the limit (413), prompt + max_tokens past the context (400
// context_length_exceeded); a full queue answers 429 with Retry-After; a client that disconnects
// mid-stream is cancelled and its slot serves the waiting request.

import assert from "node:assert/strict";
import { type RunningServer, startServer } from "../src/serve/server.ts";
import { pngDataUrl, tinyCheckpoint } from "./serve_util.ts";
import { GPU_TEST } from "./util.ts";

const KEY = "test-key";
let running: RunningServer | null = null;

async function setup(): Promise<RunningServer> {
  const { bundle } = await tinyCheckpoint();
  running ??= startServer(bundle, {
    modelName: "tiny",
    apiKey: KEY,
    maxBatch: 1,
    maxQueue: 1,
    maxTokensLimit: 400,
    maxContext: 480,
    maxImages: 2,
    maxBodyBytes: 1 << 20,
    images: { maxPixels: 1_000_000 },
  });
  return running;
}

async function post(body: unknown, key: string | null = KEY): Promise<Response> {
  const s = await setup();
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (key !== null) headers.authorization = `Bearer ${key}`;
  return fetch(`${s.url}/v1/chat/completions`, {
    method: "POST",
    headers,
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

/** Status and the error object; checks the OpenAI shape. */
async function error(
  res: Response,
): Promise<{ status: number; message: string; e: Record<string, unknown> }> {
  const body = await res.json();
  assert.ok(body.error, `error body: ${JSON.stringify(body)}`);
  const e = body.error;
  assert.equal(typeof e.message, "string");
  assert.equal(typeof e.type, "string");
  assert.ok("code" in e && "param" in e);
  return { status: res.status, message: e.message, e };
}

const ask = (extra: Record<string, unknown> = {}) => ({
  model: "tiny",
  messages: [{ role: "user", content: "What shape is this?" }],
  max_tokens: 4,
  temperature: 0,
  ...extra,
});

Deno.test("serve errors: auth", GPU_TEST, async () => {
  const s = await setup();
  const none = await error(await post(ask(), null));
  assert.equal(none.status, 401);
  assert.equal(none.e.code, "invalid_api_key");
  assert.equal((await error(await post(ask(), "wrong"))).status, 401);
  const models = await fetch(`${s.url}/v1/models`);
  assert.equal(models.status, 401);
  await models.body?.cancel();
  const health = await fetch(`${s.url}/health`);
  assert.equal(health.status, 200, "/health needs no key");
  await health.body?.cancel();
  const ok = await post(ask());
  assert.equal(ok.status, 200);
  assert.equal((await ok.json()).object, "chat.completion");
});

Deno.test("serve errors: malformed JSON, bad types, unknown model", GPU_TEST, async () => {
  const bad = await error(await post('{"model": "tiny", "messages": ['));
  assert.equal(bad.status, 400);
  assert.match(bad.message, /malformed JSON/);
  const cases: [Record<string, unknown>, string][] = [
    [{ temperature: "hot" }, "temperature"],
    [{ temperature: 3 }, "temperature"],
    [{ max_tokens: 0 }, "max_tokens"],
    [{ n: 1.5 }, "n"],
    [{ stop: [1] }, "stop[0]"],
    [{ stream: "yes" }, "stream"],
    [{ messages: "hi" }, "messages"],
    [{ messages: [{ role: "robot", content: "x" }] }, "messages[0].role"],
    [{ messages: [{ role: "user", content: [{ type: "audio" }] }] }, "messages[0].content[0].type"],
    [{ messages: [{ role: "user", content: 5 }] }, "messages[0].content"],
  ];
  for (const [over, param] of cases) {
    const r = await error(await post(ask(over)));
    assert.equal(r.status, 400, JSON.stringify(over));
    assert.equal(r.e.param, param, JSON.stringify(over));
    assert.ok(r.message.startsWith(param), r.message);
  }
  const nf = await error(await post(ask({ model: "gpt-4o" })));
  assert.equal(nf.status, 404);
  assert.equal(nf.e.code, "model_not_found");
  assert.match(nf.message, /gpt-4o/);
});

Deno.test("serve errors: images, body size, context length", GPU_TEST, async () => {
  const img = await pngDataUrl(20, 20);
  const withImages = (urls: string[]) =>
    ask({
      messages: [{
        role: "user",
        content: [
          ...urls.map((url) => ({ type: "image_url", image_url: { url } })),
          { type: "text", text: "What is it?" },
        ],
      }],
    });
  const many = await error(await post(withImages([img.url, img.url, img.url])));
  assert.equal(many.status, 400);
  assert.match(many.message, /3 images/);
  const junk = await error(await post(withImages(["data:image/png;base64," + btoa("not a png")])));
  assert.equal(junk.status, 400);
  assert.equal(junk.e.param, "messages[0].content[0].image_url.url");
  assert.match(junk.message, /cannot decode/);
  // A PNG header claiming 5000×5000: refused from the header alone (the rest is not a PNG).
  const hdr = new Uint8Array(64);
  hdr.set([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, 0x49, 0x48, 0x44, 0x52]);
  new DataView(hdr.buffer).setUint32(16, 5000);
  new DataView(hdr.buffer).setUint32(20, 5000);
  const bomb = await error(
    await post(withImages(["data:image/png;base64," + btoa(String.fromCharCode(...hdr))])),
  );
  assert.equal(bomb.status, 400);
  assert.match(bomb.message, /5000x5000 pixels exceeds the 1000000-pixel limit/);
  const remote = await error(await post(withImages(["http://127.0.0.1:9/x.png"])));
  assert.equal(remote.status, 400);
  assert.match(remote.message, /allow_remote_images/);
  const big = await error(await post(ask({ pad: "x".repeat(1 << 20) })));
  assert.equal(big.status, 413);
  const long = await error(
    await post(
      ask({ max_tokens: 400, messages: [{ role: "user", content: "word ".repeat(200) }] }),
    ),
  );
  assert.equal(long.status, 400);
  assert.equal(long.e.code, "context_length_exceeded");
  assert.equal(long.e.n_ctx, 480);
  assert.equal(typeof long.e.n_prompt_tokens, "number");
});

Deno.test(
  "serve errors: full queue → 429; a disconnected stream frees its slot",
  GPU_TEST,
  async () => {
    const s = await setup();
    const until = async (what: string, ok: () => boolean) => {
      for (let i = 0; i < 2000 && !ok(); i++) await new Promise((r) => setTimeout(r, 5));
      assert.ok(ok(), what);
    };
    const cancelledBefore = s.metrics.cancelled;
    // A: a long stream holding the only batch row.
    const a = await post(ask({ max_tokens: 400, ignore_eos: true, stream: true }));
    assert.equal(a.status, 200);
    const reader = a.body!.getReader();
    await reader.read();
    await until("A runs", () => s.engine.running === 1);
    // B waits in the one queue place; C finds the queue full.
    const b = post(ask({ max_tokens: 3 }));
    await until("B queued", () => s.engine.queueDepth === 1);
    const c = await post(ask());
    const full = await error(c);
    assert.equal(full.status, 429);
    assert.equal(c.headers.get("retry-after"), "1");
    assert.ok(s.engine.running === 1, "A was still generating when C was refused");
    // A's client goes away: A is cancelled and B gets the row.
    await reader.cancel();
    const rb = await b;
    assert.equal(rb.status, 200);
    const body = await rb.json();
    assert.equal(body.choices[0].finish_reason, "length");
    assert.equal(s.metrics.cancelled, cancelledBefore + 1);
    await until("all idle", () => s.engine.running === 0 && s.engine.queueDepth === 0);
    await s.shutdown();
    running = null;
  },
);

Deno.test(
  "serve errors: remote images with --allow_remote_images: size and time limits",
  GPU_TEST,
  async () => {
    const { bundle } = await tinyCheckpoint();
    const img = await pngDataUrl(24, 24, 0x8080ffff);
    const png = new Uint8Array(img.bytes);
    // A local image host: /ok.png, /big.png (over the byte cap), /slow.png (past the time limit).
    const host = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
      const path = new URL(req.url).pathname;
      if (path === "/ok.png") return new Response(png);
      if (path === "/big.png") return new Response(new Uint8Array(64 * 1024));
      await new Promise((r) => setTimeout(r, 1500));
      return new Response(png);
    });
    const s = startServer(bundle, {
      modelName: "tiny",
      images: { allowRemote: true, fetchTimeoutMs: 300, maxBytes: 32 * 1024 },
    });
    const base = `http://127.0.0.1:${(host.addr as Deno.NetAddr).port}`;
    const ask = (url: string) =>
      fetch(`${s.url}/v1/chat/completions`, {
        method: "POST",
        body: JSON.stringify({
          model: "tiny",
          max_tokens: 2,
          temperature: 0,
          messages: [{
            role: "user",
            content: [{ type: "image_url", image_url: { url } }, { type: "text", text: "?" }],
          }],
        }),
      });
    try {
      const ok = await ask(`${base}/ok.png`);
      assert.equal(ok.status, 200);
      assert.equal((await ok.json()).usage.prompt_tokens_details.image_tokens, 4);
      const big = await error(await ask(`${base}/big.png`));
      assert.equal(big.status, 413);
      assert.match(big.message, /exceeds 32768 bytes/);
      const slow = await error(await ask(`${base}/slow.png`));
      assert.equal(slow.status, 400);
      assert.match(slow.message, /longer than 300 ms/);
    } finally {
      await s.shutdown();
      await host.shutdown();
    }
  },
);
