// The PyTorch parity runner: every fixture section, the forward/gradient/generation/LoRA ones
// (fixture.ts) and the 10-step training replays `train.*` (replay.ts). Import this module — not
// fixture.ts alone — to run a whole fixture.

import "./replay.ts";

export * from "./fixture.ts";
export { replayFixtureSection, type ReplaySetting, replayTraining } from "./replay.ts";
