// deno task demo — trains a small SiQ-VL on generated shapes (no downloads) through the same
// code path as cli/train.ts (stage 1, then stage 2 with LoRA) and prints held-out accuracy.
// The last line is `accuracy: <fraction> (<n> held-out questions)`.
//
// Flags: --output_dir DIR (default ./out/demo; removed and recreated), --help.

import { runDemo } from "../src/demo/demo.ts";
import { demoMain } from "./flags.ts";
import { trainFromArgv } from "./train.ts";

const HELP = "Usage: deno task demo [--output_dir DIR]\n\nTrains a small SiQ-VL from scratch on " +
  "generated shapes (stage 1, then stage 2 with LoRA)\nand prints held-out accuracy. " +
  "Everything is written under DIR (default ./out/demo).";

if (import.meta.main) {
  await demoMain(
    Deno.args,
    HELP,
    (out) => runDemo(out, (argv, keepModel) => trainFromArgv(argv, { keepModel })),
  );
}
