// Errors users see (issue 15, class 6): -h on every CLI, seeds beyond 32 bits refused, the
// fixture CLI failing in one line without a stack trace.

import assert from "node:assert/strict";
import { finalizeArgs, parseTrainArgs } from "../src/train/args.ts";
import { main as generateMain } from "../cli/generate.ts";

const ROOT = new URL("../", import.meta.url).pathname;

async function cli(script: string, args: string[]) {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--unstable-webgpu", `${ROOT}cli/${script}`, ...args],
    env: { NO_COLOR: "1", XDG_RUNTIME_DIR: "/tmp" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: r.code, out: dec.decode(r.stdout), err: dec.decode(r.stderr) };
}

Deno.test("-h prints usage and exits 0 on every CLI", async () => {
  for (
    const c of [
      "chat.ts",
      "demo.ts",
      "eval.ts",
      "fixture.ts",
      "generate.ts",
      "serve.ts",
      "train.ts",
    ]
  ) {
    const r = await cli(c, ["-h"]);
    assert.equal(r.code, 0, `${c}: ${r.err}`);
    assert.match(r.out, /usage/i, c);
  }
});

Deno.test("seeds beyond 32 bits are refused, not wrapped", async () => {
  assert.throws(
    () => finalizeArgs(parseTrainArgs(["--seed", "4294967296"], {}).args, new Set(["seed"])),
    /--seed.*4294967295/,
  );
  const ok = parseTrainArgs(["--seed", "4294967295"], {});
  assert.equal(ok.args.seed, 4294967295);
  await assert.rejects(
    generateMain(["--checkpoint", "x", "--image", "y.png", "--seed", "4294967296"], () => {}),
    /--seed: invalid value "4294967296"/,
  );
});

Deno.test("the fixture CLI fails in one line, naming the file, without a stack trace", async () => {
  const r = await cli("fixture.ts", ["/nonexistent-fixture", "/tmp/out.safetensors"]);
  assert.equal(r.code, 1);
  const lines = r.err.trim().split("\n");
  assert.equal(lines.length, 1, r.err);
  assert.match(lines[0], /^error: .*\/nonexistent-fixture\/siqvl_config\.json/);
});
