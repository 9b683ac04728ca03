// deno task demo — trains a small SiQ-VL on generated shapes (no downloads) through the same
// code path as cli/train.ts (stage 1, then stage 2 with LoRA) and prints held-out accuracy.
// The last line is `accuracy: <fraction> (<n> held-out questions)`.
//
// Flags: --output_dir DIR (default ./out/demo; removed and recreated), --help.

import { parseArgs } from "node:util";
import { runDemo } from "../src/demo/demo.ts";
import { trainFromArgv } from "./train.ts";
import { announce } from "../src/gpu/announce.ts";

if (import.meta.main) {
  try {
    const { values } = parseArgs({
      args: Deno.args,
      options: { output_dir: { type: "string" }, help: { type: "boolean", short: "h" } },
      strict: true,
    });
    if (values.help) {
      console.log(
        "Usage: deno task demo [--output_dir DIR]\n\nTrains a small SiQ-VL from scratch on " +
          "generated shapes (stage 1, then stage 2 with LoRA)\nand prints held-out accuracy. " +
          "Everything is written under DIR (default ./out/demo).",
      );
      Deno.exit(0);
    }
    await announce();
    const out = values.output_dir ?? "./out/demo";
    await runDemo(out, (argv, keepModel) => trainFromArgv(argv, { keepModel }));
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
