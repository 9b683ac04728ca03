// deno task demo:reasoning — stages 3 and 4 on the demo's stage-2 model (trained first when
// absent), no downloads: chain-of-thought SFT on generated shapes scenes, DPO on generated
// preference pairs, then GRPO with the exact-match reward, all through cli/train.ts's code path.
// The last three lines:
//   cot accuracy: <before> -> <after> (<n> held-out questions)
//   preference accuracy: <before> -> <after> (<n> held-out pairs)
//   grpo reward: <before> -> <after> (<n> held-out prompts)
//
// Flags: --output_dir DIR (default ./out/demo: the stage-2 demo's directory), --help.

import { runReasoningDemo } from "../src/demo/reasoning.ts";
import { demoMain } from "./flags.ts";
import { trainFromArgv } from "./train.ts";

const HELP = "Usage: deno task demo:reasoning [--output_dir DIR]\n\nContinues the demo's stage-2 " +
  "model under DIR (default ./out/demo; `deno task demo` runs first when it is\n" +
  "missing): stage 3 chain-of-thought SFT, stage 4 DPO, stage 4 GRPO, and prints " +
  "held-out results before and after each.";

if (import.meta.main) {
  await demoMain(
    Deno.args,
    HELP,
    (out) => runReasoningDemo(out, (argv, keepModel) => trainFromArgv(argv, { keepModel })),
  );
}
