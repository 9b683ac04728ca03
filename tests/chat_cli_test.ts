// cli/chat.ts with scripted input on a tiny checkpoint: a local (in-process server) session with
// /system, /image, two turns, /save and /reset, the streamed answers being what the history
// keeps; the single-turn --image/-p mode against a running server (--url) gives the server's own
// greedy answer.

import assert from "node:assert/strict";
import { join } from "node:path";
import { chatMain } from "../cli/chat.ts";
import { startServer } from "../src/serve/server.ts";
import { pngDataUrl, tinyCheckpoint } from "./serve_util.ts";
import { GPU_TEST } from "./util.ts";

async function* script(lines: string[]): AsyncGenerator<string> {
  for (const l of lines) yield l;
}

Deno.test("chat: local session with /system, /image, /save, /reset", GPU_TEST, async () => {
  const { dir } = await tinyCheckpoint();
  const tmp = Deno.makeTempDirSync({ prefix: "siqvl-chat-" });
  const img = await pngDataUrl(30, 30, 0x00ff00ff);
  Deno.writeFileSync(join(tmp, "a.png"), img.bytes);
  const first = join(tmp, "first.json"), second = join(tmp, "second.json");
  let out = "";
  await chatMain(["--checkpoint", dir, "--temperature", "0", "--max_tokens", "6"], {
    lines: script([
      "/system Answer in one word.",
      `/image ${join(tmp, "a.png")}`,
      "What color is the shape?",
      "And its shape?",
      `/save ${first}`,
      "/reset",
      "Hello",
      `/save ${second}`,
      "/nonsense",
      "/quit",
      "never read",
    ]),
    write: (s) => (out += s),
  });
  assert.match(out, /\[image .*a\.png attached to the next message\]/);
  assert.match(out, /\[saved 5 messages to /);
  assert.match(out, /\[conversation reset\]/);
  assert.match(out, /error: unknown command \/nonsense/);
  const a = JSON.parse(Deno.readTextFileSync(first));
  assert.deepEqual(a.messages.map((m: { role: string }) => m.role), [
    "system",
    "user",
    "assistant",
    "user",
    "assistant",
  ]);
  assert.equal(a.messages[0].content, "Answer in one word.");
  assert.equal(a.messages[1].content[0].image_url.url, img.url, "the image went with turn 1");
  assert.equal(a.messages[3].content, "And its shape?", "and only with turn 1");
  // What was streamed to the terminal is what the history keeps.
  for (const m of [a.messages[2], a.messages[4]]) assert.ok(out.includes(m.content));
  const b = JSON.parse(Deno.readTextFileSync(second));
  assert.deepEqual(b.messages.map((m: { role: string }) => m.role), [
    "system",
    "user",
    "assistant",
  ]);
  assert.equal(b.messages[1].content, "Hello");
});

Deno.test(
  "chat: single turn against a running server (--url) = the server's answer",
  GPU_TEST,
  async () => {
    const { bundle } = await tinyCheckpoint();
    const server = startServer(bundle, { modelName: "tiny", apiKey: "k" });
    try {
      const tmp = Deno.makeTempDirSync({ prefix: "siqvl-chat-" });
      const img = await pngDataUrl(28, 36, 0x0000ffff);
      Deno.writeFileSync(join(tmp, "b.png"), img.bytes);
      let out = "";
      const answer = await chatMain([
        "--url",
        `${server.url}/v1`,
        "--api_key",
        "k",
        "--image",
        join(tmp, "b.png"),
        "-p",
        "What shape is this?",
        "--temperature",
        "0",
        "--max_tokens",
        "7",
      ], { lines: script([]), write: (s) => (out += s) });
      assert.equal(out, answer + "\n");
      const res = await fetch(`${server.url}/v1/chat/completions`, {
        method: "POST",
        headers: { authorization: "Bearer k" },
        body: JSON.stringify({
          model: "tiny",
          temperature: 0,
          max_tokens: 7,
          messages: [{
            role: "user",
            content: [{ type: "image_url", image_url: { url: img.url } }, {
              type: "text",
              text: "What shape is this?",
            }],
          }],
        }),
      });
      assert.equal((await res.json()).choices[0].message.content, answer);
    } finally {
      await server.shutdown();
    }
  },
);
