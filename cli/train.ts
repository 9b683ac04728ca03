// deno run -A --unstable-webgpu cli/train.ts [flags]  — train SiQ-VL stage 1 or 2.
// Flags: see --help (src/train/args.ts). Exit status: 0 done, 1 error, 2 stopped on non-finite
// losses/gradients (the last good checkpoint is named in the log).

import { trainHelp } from "../src/train/args.ts";
import { argsFromArgv, runTraining } from "../src/train/trainer.ts";
import { announce } from "../src/gpu/announce.ts";
import { MetricPlotsCallback } from "../src/train/metric_plot.ts";

export { argsFromArgv, trainFromArgv } from "../src/train/trainer.ts";

/** The CLI: returns the process exit code. */
export async function main(argv: string[]): Promise<number> {
  let env: Record<string, string | undefined> = {};
  try {
    env = { STAGE: Deno.env.get("STAGE") };
  } catch { /* no --allow-env */ }
  const args = await argsFromArgv(argv, env);
  if (!args) {
    console.log(trainHelp());
    return 0;
  }
  await announce();
  // SIQVL_KILL_AFTER_STEPS=n simulates a crash after n optimizer steps (tests of --resume):
  // the process ends at once, without a final save or any cleanup, exit status 137.
  let kill: number | undefined;
  try {
    const k = Deno.env.get("SIQVL_KILL_AFTER_STEPS");
    if (k) kill = Number(k);
  } catch { /* no --allow-env */ }
  const res = await runTraining({
    args,
    killAfterSteps: kill,
    callbacks: [new MetricPlotsCallback()], // stage 4: rewards.svg, logps.svg, reward.svg, kl.svg
  });
  if (res.status === "killed") Deno.exit(137);
  return res.status === "stopped-nonfinite" ? 2 : 0;
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (e) {
    const debug = (() => {
      try {
        return Deno.env.get("SIQVL_DEBUG") === "1";
      } catch {
        return false;
      }
    })();
    console.error(`error: ${debug ? (e as Error).stack : (e as Error).message}`);
    Deno.exit(1);
  }
}
