// The OpenAI-compatible server driven by the official `openai` client on 127.0.0.1 with a tiny
// random checkpoint: greedy answers equal cli/generate.ts's, usage equals the tokenizer's counts
// and in-process generate's token count, streaming chunks add up to the whole answer (usage
// chunk last), stop strings cut the text and end with finish_reason "stop", n = 2 choices,
// concurrent requests with different images each get their own answer, /v1/models, /health,
// /metrics.

import assert from "node:assert/strict";
import OpenAI from "openai";
import { main as generateMain } from "../cli/generate.ts";
import { preprocessBytes } from "../src/data/image_processor.ts";
import { generate } from "../src/infer/generate.ts";
import { type RunningServer, startServer } from "../src/serve/server.ts";
import { noGrad, Tensor } from "../src/tensor/mod.ts";
import { pngDataUrl, tinyCheckpoint } from "./serve_util.ts";
import { GPU_TEST } from "./util.ts";

let running: RunningServer | null = null;
async function setup() {
  const { dir, bundle } = await tinyCheckpoint();
  running ??= startServer(bundle, {
    modelName: "tiny",
    maxBatch: 8,
    maxQueue: 16,
    maxTokensLimit: 64,
    maxContext: 128,
  });
  const server = running;
  const client = new OpenAI({ apiKey: "unused", baseURL: `${server.url}/v1`, maxRetries: 0 });
  return { dir, bundle, server, client };
}

const userTurn = (url: string, text: string) => ({
  role: "user" as const,
  content: [
    { type: "image_url" as const, image_url: { url } },
    { type: "text" as const, text },
  ],
});

Deno.test(
  "serve: greedy answer = cli/generate.ts; usage = tokenizer counts",
  GPU_TEST,
  async () => {
    const { dir, bundle, client } = await setup();
    const img = await pngDataUrl(40, 30, 0x2040e0ff);
    const question = "What shape is this?";
    const res = await client.chat.completions.create({
      model: "tiny",
      messages: [userTurn(img.url, question)],
      temperature: 0,
      max_tokens: 12,
    });
    const file = Deno.makeTempFileSync({ suffix: ".png" });
    Deno.writeFileSync(file, img.bytes);
    const cli = await generateMain(
      ["--checkpoint", dir, "--image", file, "--question", question, "--no_sample"].concat(
        ["--max_new_tokens", "12"],
      ),
      () => {},
    );
    const content = res.choices[0].message.content ?? "";
    assert.ok(cli.length > 0, "the CLI answered something");
    assert.equal(content.trim(), cli);

    // Usage: the processor's prompt ids (image tokens included) and generate's token count.
    const { model, processor } = bundle;
    const prompt = Array.from(processor.encodePrompt(question).inputIds);
    const px = await preprocessBytes(img.bytes, processor.image);
    const S = processor.image.size;
    const pixels = noGrad(() => Tensor.from(model.gpu, px, [1, 3, S, S]));
    const ref = await generate(model, { inputIds: [prompt], pixelValues: pixels }, {
      maxNewTokens: 12,
      stopTokenIds: processor.stopIds(),
      padTokenId: processor.ids.pad,
    });
    pixels.dispose();
    assert.equal(res.usage?.prompt_tokens, prompt.length);
    assert.ok(prompt.filter((t) => t === processor.ids.imagePad).length === 4);
    assert.equal(res.usage?.completion_tokens, ref.tokens[0].length);
    assert.equal(res.usage?.total_tokens, prompt.length + ref.tokens[0].length);
    assert.equal(res.choices[0].finish_reason, ref.finishReasons[0]);
    assert.equal(res.object, "chat.completion");
    assert.match(res.id, /^chatcmpl-/);
  },
);

Deno.test(
  "serve: streaming chunks add up to the answer, usage chunk before [DONE]",
  GPU_TEST,
  async () => {
    const { client } = await setup();
    const img = await pngDataUrl(32, 32, 0x10c010ff);
    const messages = [
      { role: "system" as const, content: "Answer briefly." },
      userTurn(img.url, "What color is it?"),
    ];
    const whole = await client.chat.completions.create({
      model: "tiny",
      messages,
      temperature: 0,
      max_completion_tokens: 10,
    });
    const stream = await client.chat.completions.create({
      model: "tiny",
      messages,
      temperature: 0,
      max_completion_tokens: 10,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "", roleSeen = false, finish: string | null = null;
    const ids = new Set<string>();
    let usage: OpenAI.CompletionUsage | null | undefined = null;
    let afterUsage = 0;
    for await (const chunk of stream) {
      ids.add(chunk.id);
      assert.equal(chunk.object, "chat.completion.chunk");
      if (usage) afterUsage++;
      if (chunk.usage) {
        usage = chunk.usage;
        assert.equal(chunk.choices.length, 0);
        continue;
      }
      const c = chunk.choices[0];
      if (c.delta.role === "assistant") roleSeen = true;
      text += c.delta.content ?? "";
      if (c.finish_reason) finish = c.finish_reason;
    }
    assert.ok(roleSeen);
    assert.equal(ids.size, 1);
    assert.equal(text, whole.choices[0].message.content);
    assert.equal(finish, whole.choices[0].finish_reason);
    assert.deepEqual(usage, whole.usage);
    assert.equal(afterUsage, 0, "the usage chunk is the last one");
  },
);

Deno.test(
  "serve: stop strings cut the answer (stream and not); n = 2 choices",
  GPU_TEST,
  async () => {
    const { client } = await setup();
    const img = await pngDataUrl(36, 36, 0xe0e010ff);
    const base = {
      model: "tiny",
      messages: [userTurn(img.url, "Describe this image.")],
      temperature: 1,
      seed: 11,
      max_tokens: 40,
    };
    const free = (await client.chat.completions.create(base)).choices[0].message.content ?? "";
    // A stop string taken from the middle of the seeded answer (printable, no U+FFFD).
    const clean = [...free.matchAll(/[A-Za-z ]{2,}/g)].map((m) => m[0]).filter((s) => s.trim());
    assert.ok(clean.length > 0, `answer has a word to stop at: ${JSON.stringify(free)}`);
    const stop = clean[Math.floor(clean.length / 2)].slice(0, 2);
    const want = free.slice(0, free.indexOf(stop));
    const cut = await client.chat.completions.create({ ...base, stop: [stop, "\u0001never"] });
    assert.equal(cut.choices[0].message.content, want);
    assert.equal(cut.choices[0].finish_reason, "stop");
    const streamed = await client.chat.completions.create({ ...base, stop, stream: true });
    let text = "";
    for await (const c of streamed) text += c.choices[0]?.delta.content ?? "";
    assert.equal(text, want);

    const two = await client.chat.completions.create({ ...base, n: 2 });
    assert.equal(two.choices.length, 2);
    assert.deepEqual(two.choices.map((c) => c.index), [0, 1]);
    assert.equal(two.choices[0].message.content, free, "choice 0 uses the request's seed");
    assert.notEqual(two.choices[1].message.content, free, "choice 1 draws its own stream");
    const tokens = two.usage?.completion_tokens ?? 0;
    assert.ok(tokens >= 2 && tokens <= 80);
  },
);

Deno.test(
  "serve: concurrent requests with different images each get their own answer",
  GPU_TEST,
  async () => {
    const { client, server } = await setup();
    const colours = [0xff0000ff, 0x00ff00ff, 0x0000ffff, 0xffff00ff, 0x00ffffff, 0xff00ffff];
    const imgs = await Promise.all(colours.map((c, i) => pngDataUrl(30 + i, 34, c)));
    const ask = (i: number) =>
      client.chat.completions.create({
        model: "tiny",
        messages: [userTurn(imgs[i].url, `Question ${i}: what is shown?`)],
        temperature: 0,
        max_tokens: 8 + 3 * i,
      }).then((r) => r.choices[0].message.content);
    const alone: (string | null)[] = [];
    for (let i = 0; i < colours.length; i++) alone.push(await ask(i));
    const before = server.metrics.batchSize.count;
    const together = await Promise.all(colours.map((_, i) => ask(i)));
    assert.deepEqual(together, alone);
    // Some decode step ran more than one sequence.
    const steps = server.metrics.batchSize;
    assert.ok(steps.count > before);
    assert.ok(steps.counts[0] < steps.count, "a decode step batched several requests");
  },
);

Deno.test("serve: /v1/models, /health, /metrics", GPU_TEST, async () => {
  const { client, server } = await setup();
  const models = await client.models.list();
  assert.deepEqual(models.data.map((m) => m.id), ["tiny"]);
  const health = await fetch(`${server.url}/health`);
  assert.deepEqual(await health.json(), { status: "ok" });
  const metrics = await (await fetch(`${server.url}/metrics`)).text();
  for (
    const name of [
      "siqvl_requests_total{",
      "siqvl_generation_tokens_total",
      "siqvl_queue_depth",
      "siqvl_decode_batch_size_bucket",
      "siqvl_time_to_first_token_seconds_count",
      "siqvl_request_latency_seconds_sum",
    ]
  ) assert.ok(metrics.includes(name), `metrics has ${name}`);
  await server.shutdown();
  running = null;
});
