// One profiled stretch of a CLI run (`--profile` of cli/generate.ts, cli/eval.ts and, through
// src/train/profile_window.ts, cli/train.ts): the model's forwards tagged with SiQ-VL part names
// (and any extra methods), the profile started, then stopped with its JSON written and its tables
// returned for printing.
//
//   const s = await ProfileSession.start(gpu, model);  // [optimizer, "update", "optimizer"], …
//   … work …
//   const report = await s.stop(file);                 // JSON written to file
//   await s.stop(null) in a finally: a profile still running is stopped, nothing written

import {
  formatProfile,
  instrumentMethod,
  instrumentParts,
  type PartModule,
  type ProfiledGpu,
  type ProfileReport,
  SIQVL_PART_METHODS,
  siqvlPart,
  startProfile,
  stopProfile,
} from "./profile.ts";

export { formatProfile, profileSection } from "./profile.ts";

/** A running profile with the part instrumentation it put on the model. */
export class ProfileSession {
  #undo: (() => void)[];
  #running = true;

  private constructor(readonly gpu: ProfiledGpu, undo: (() => void)[]) {
    this.#undo = undo;
  }

  /** Tag `model`'s parts (and `extra` [object, method, part] triples), then start profiling. */
  static async start(
    gpu: ProfiledGpu,
    model: PartModule,
    extra: [object, string, string][] = [],
  ): Promise<ProfileSession> {
    const undo = [
      instrumentParts(model, siqvlPart, SIQVL_PART_METHODS),
      ...extra.map(([o, m, p]) => instrumentMethod(o, m, p)),
    ];
    try {
      await startProfile(gpu);
    } catch (e) {
      undo.reverse().forEach((f) => f());
      throw e;
    }
    return new ProfileSession(gpu, undo);
  }

  get running(): boolean {
    return this.#running;
  }

  /**
   * Stop (once): waits for the GPU, restores the model's methods, writes the report as JSON to
   * `file` (with `extra` fields merged in) unless null. Returns the report, or null when it was
   * already stopped.
   */
  async stop<X extends object>(
    file: string | null,
    extra?: X,
  ): Promise<(ProfileReport & X) | null> {
    if (!this.#running) return null;
    this.#running = false;
    let report: ProfileReport & X;
    try {
      report = { ...(await stopProfile(this.gpu)), ...(extra ?? {} as X) };
    } finally {
      for (const f of this.#undo.reverse()) f();
      this.#undo = [];
    }
    if (file !== null) await Deno.writeTextFile(file, JSON.stringify(report, null, 2) + "\n");
    return report;
  }
}

/** The printed form of a report written to `file`: a title line, then formatProfile's tables. */
export function describeProfile(title: string, report: ProfileReport, file: string): string {
  return `${title}, written to ${file}\n${formatProfile(report)}`;
}
