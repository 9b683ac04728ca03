// Profiler: where a step's GPU time goes, per kernel family, per kernel and per model part.
//
//   const prof = startProfile(gpu);        // from here every dispatch / copy / readback is counted
//   instrumentParts(model, siqvlPart);     // optional: module forwards tagged with part names
//   ... run a step ...
//   const report = await stopProfile(gpu); // waits for the GPU, resolves the timestamps
//   console.log(formatProfile(report));   // tables; JSON.stringify(report) for a file
//
// GPU time. Where the adapter has `timestamp-query` (lavapipe does), every dispatch of a profiled
// region runs in its own compute pass with timestamps written at its beginning and end, so each
// kernel's time is measured on the device. Copies (texture staging, buffer copies, uploads) cannot
// carry timestamps outside a pass; the gap between the end of the pass before them and the
// beginning of the pass after them is charged to them, split by bytes (this includes the pass
// switch itself, so it is an upper bound). Fallback without timestamps: each batch's wall time from
// submit to onSubmittedWorkDone is split over its records in proportion to bytes bound ("estimate"
// in the report's `timing`). Profiling changes the schedule a little (one pass per dispatch), so
// its total runs a few percent above an unprofiled step.
//
// Bytes moved: per dispatch, the sizes of every bound buffer window and texture (what the kernel
// may read or write — an upper bound on traffic); per copy, its size; per readback, its size.
//
// Model parts: a stack of names (profilePart(name, fn), or instrumentParts() wrapping module
// forwards). The autograd tape remembers each node's part, so backward kernels are charged to
// "backward:<part>", and a gradient-checkpointing recompute to "recompute:<part>".
//
// Sections: a coarser label set from outside between pieces of work (profileSection("decode")),
// e.g. a generation's prefill and decode; every record falls in the section current when it was
// encoded (default "all"). pauseProfile(gpu, fn) runs fn unrecorded inside a profile (a trainer's
// eval or save between profiled steps); its wall time is left out of the report's.

import process from "node:process";

/** Kinds of recorded work. */
export type ProfileKind = "kernel" | "copy" | "upload" | "readback";

/** One aggregated row of a profile table. */
export interface ProfileRow {
  name: string;
  count: number;
  /** Device time (ms); see the file header for copies and the fallback. */
  gpuMs: number;
  bytes: number;
  /** gpuMs / total gpuMs. */
  share: number;
}

/** What stopProfile() returns (JSON-serialisable). */
export interface ProfileReport {
  /** "timestamp-query" or "estimate" (see the file header). */
  timing: "timestamp-query" | "estimate";
  wallMs: number;
  gpuMs: number;
  dispatches: number;
  copies: number;
  readbacks: number;
  /** Wall time paused (pauseProfile), not in wallMs. */
  pausedMs: number;
  /** Peak of the buffer pool (bytes) during the profile, and the process's peak RSS at its end. */
  poolPeakBytes: number;
  peakRssBytes: number;
  families: ProfileRow[];
  kernels: ProfileRow[];
  parts: ProfileRow[];
  /** Per section (profileSection); one row "all" when none was named. */
  sections: ProfileRow[];
}

interface Rec {
  kind: ProfileKind;
  family: string;
  kernel: string;
  part: string;
  section: string;
  bytes: number;
  ns: number;
}

/** Live state of one profile (one at a time, process-wide). */
export class Profiler {
  readonly records: Rec[] = [];
  readonly t0 = performance.now();
  readonly pending: Promise<void>[] = [];
  /** The section new records fall in (profileSection). */
  section = "all";
  pausedMs = 0;
  #stack: string[] = [];
  #phase: "forward" | "backward" | "recompute" = "forward";

  /** The current part label ("vision", "backward:llm.mlp", …). */
  label(): string {
    const p = this.#stack[this.#stack.length - 1] ?? "other";
    return this.#phase === "forward" ? p : `${this.#phase}:${p}`;
  }

  /** The innermost part name, without the phase (what the tape stores per node). */
  part(): string | undefined {
    return this.#stack[this.#stack.length - 1];
  }

  /** Run fn inside part `name`; inside a backward this is a checkpoint recompute. */
  within<T>(name: string, fn: () => T, phase?: "backward"): T {
    const saved = this.#phase;
    this.#phase = phase ?? (saved === "forward" ? "forward" : "recompute");
    this.#stack.push(name);
    try {
      return fn();
    } finally {
      this.#stack.pop();
      this.#phase = saved;
    }
  }

  /** Add a record; returns it so the device can fill in its time later. */
  add(kind: ProfileKind, family: string, kernel: string, bytes: number): Rec {
    const r: Rec = {
      kind,
      family,
      kernel,
      part: this.label(),
      section: this.section,
      bytes,
      ns: 0,
    };
    this.records.push(r);
    return r;
  }
}

const viewBytes = new WeakMap<GPUTextureView, number>();

/** Tell the profiler how many bytes a texture view covers (it cannot ask the view). */
export function registerViewBytes(view: GPUTextureView, bytes: number): void {
  viewBytes.set(view, bytes);
}

/** Bytes a binding covers: a buffer window's size, a whole buffer, a registered texture view. */
export function bindingBytes(
  b: GPUBuffer | GPUTextureView | { buffer: GPUBuffer; offset?: number; size?: number },
): number {
  if (b instanceof GPUTextureView) return viewBytes.get(b) ?? 0;
  if (b instanceof GPUBuffer) return b.size;
  return b.size ?? b.buffer.size - (b.offset ?? 0);
}

let active: Profiler | null = null;
let activeGpu: ProfiledGpu | null = null;

/** What the profiler needs from the runtime (src/gpu/device.ts implements it). */
export interface ProfiledGpu {
  sync(): Promise<void>;
  memory(): { peak: number };
  pool: { resetPeak(): void };
  features: { timestampQuery: boolean };
}

/** The running profile, or null. */
export function activeProfiler(): Profiler | null {
  return active;
}

/** Start profiling `gpu` (work recorded before is flushed first, and not counted). */
export async function startProfile(gpu: ProfiledGpu): Promise<Profiler> {
  if (active) throw new Error("startProfile: a profile is already running");
  await gpu.sync();
  gpu.pool.resetPeak();
  active = new Profiler();
  activeGpu = gpu;
  return active;
}

/** Stop the running profile: waits for the GPU and returns the aggregated report. */
export async function stopProfile(gpu: ProfiledGpu): Promise<ProfileReport> {
  const p = active;
  if (!p || activeGpu !== gpu) throw new Error("stopProfile: no profile running on this device");
  await gpu.sync();
  const wallMs = performance.now() - p.t0 - p.pausedMs;
  active = null;
  activeGpu = null;
  await Promise.all(p.pending);
  const rows = (key: (r: Rec) => string): ProfileRow[] => {
    const m = new Map<string, ProfileRow>();
    for (const r of p.records) {
      const k = key(r);
      let row = m.get(k);
      if (!row) m.set(k, row = { name: k, count: 0, gpuMs: 0, bytes: 0, share: 0 });
      row.count++;
      row.gpuMs += r.ns / 1e6;
      row.bytes += r.bytes;
    }
    const list = [...m.values()].sort((a, b) => b.gpuMs - a.gpuMs || b.count - a.count);
    const total = list.reduce((s, r) => s + r.gpuMs, 0);
    for (const r of list) r.share = total > 0 ? r.gpuMs / total : 0;
    return list;
  };
  const families = rows((r) => r.family);
  return {
    timing: gpu.features.timestampQuery ? "timestamp-query" : "estimate",
    wallMs,
    pausedMs: p.pausedMs,
    gpuMs: families.reduce((s, r) => s + r.gpuMs, 0),
    dispatches: p.records.filter((r) => r.kind === "kernel").length,
    copies: p.records.filter((r) => r.kind === "copy").length,
    readbacks: p.records.filter((r) => r.kind === "readback").length,
    poolPeakBytes: gpu.memory().peak,
    peakRssBytes: peakRssBytes(),
    families,
    kernels: rows((r) => r.kernel),
    parts: rows((r) => r.part),
    sections: rows((r) => r.section),
  };
}

/** Put the work encoded from now on in section `name` (a no-op when no profile is running). */
export function profileSection(name: string): void {
  if (active) active.section = name;
}

/**
 * Run `fn` with the running profile of `gpu` suspended: nothing it encodes is recorded, and its
 * wall time is not counted. The GPU is flushed before and after, so no batch mixes the two.
 * Without a running profile this is just `fn()`.
 */
export async function pauseProfile<T>(gpu: ProfiledGpu, fn: () => Promise<T>): Promise<T> {
  const p = active;
  if (!p || activeGpu !== gpu) return await fn();
  await gpu.sync();
  const t = performance.now();
  active = null;
  activeGpu = null;
  try {
    const out = await fn();
    await gpu.sync();
    return out;
  } finally {
    active = p;
    activeGpu = gpu;
    p.pausedMs += performance.now() - t;
  }
}

/** Run `fn` inside model part `name` (a no-op wrapper when no profile is running). */
export function profilePart<T>(name: string, fn: () => T): T {
  return active ? active.within(name, fn) : fn();
}

/** Run a backward closure charged to `backward:<part>` (used by the autograd tape). */
export function profileBackward<T>(part: string | undefined, fn: () => T): T {
  return active ? active.within(part ?? "other", fn, "backward") : fn();
}

/** The current part name (the tape stores it on each node), undefined when not profiling. */
export function currentPart(): string | undefined {
  return active?.part();
}

/** A module tree as far as instrumentParts needs it (src/nn/module.ts's Module fits). */
export interface PartModule {
  children(): [string, PartModule][];
}

/**
 * Charge every call of `obj[method]` to part `name` (replaces the method on the instance).
 * Returns a function that restores it.
 */
export function instrumentMethod(obj: object, method: string, name: string): () => void {
  const own = obj as Record<string, unknown>;
  const orig = own[method];
  if (typeof orig !== "function") throw new Error(`instrumentMethod: no method "${method}"`);
  const had = Object.prototype.hasOwnProperty.call(obj, method);
  own[method] = (...args: unknown[]) => profilePart(name, () => orig.apply(obj, args));
  return () => {
    if (had) own[method] = orig;
    else delete own[method];
  };
}

/**
 * Wrap the methods (default `forward`) of every module below `root` for which
 * `partOf(path, method)` names a part (path: dotted child names, e.g.
 * "text_model.model.layers.3.mlp"), so their kernels are charged to that part (the innermost
 * wins). Returns a function that restores the original methods.
 */
export function instrumentParts(
  root: PartModule,
  partOf: (path: string, method: string) => string | null,
  methods: readonly string[] = ["forward"],
): () => void {
  const undo: (() => void)[] = [];
  const walk = (m: PartModule, path: string) => {
    for (const method of methods) {
      const name = partOf(path, method);
      const fn = (m as unknown as Record<string, unknown>)[method];
      if (name && typeof fn === "function") undo.push(instrumentMethod(m, method, name));
    }
    for (const [n, c] of m.children()) walk(c, path ? `${path}.${n}` : n);
  };
  walk(root, "");
  return () => undo.reverse().forEach((f) => f());
}

/** Methods of a SiQ-VL model that siqvlPart names. */
export const SIQVL_PART_METHODS: readonly string[] = [
  "forward",
  "embedInputs",
  "loss",
  "embed",
  "logits",
];

/**
 * Part names of a SiQ-VL model (src/models/siqvl.ts): inputs (the model's own work around its
 * parts: id / position / label uploads, image tokens merged into the sequence), vision,
 * projector, the language model's phases (embed, attention incl. its projections, mlp, norm, a
 * layer's residual adds), the loss (the fused linear-CE head) and the logits head of generation
 * (llm.head).
 */
export function siqvlPart(path: string, method: string): string | null {
  const llm = path.startsWith("text_model");
  if (path === "") return method === "forward" || method === "embedInputs" ? "inputs" : null;
  if (method === "loss") return path === "text_model" ? "loss" : null;
  if (method === "embed") return path === "text_model" ? "llm.embed" : null;
  if (method === "logits") return path === "text_model" ? "llm.head" : null;
  if (path === "vision_model") return "vision";
  if (path === "projector") return "projector";
  if (!llm) return null;
  if (/embed_tokens$/.test(path)) return "llm.embed";
  if (/\.layers\.\d+$/.test(path)) return "llm.residual";
  if (/\.self_attn$/.test(path)) return "llm.attention";
  if (/\.mlp$/.test(path)) return "llm.mlp";
  if (/(layernorm|\.norm)$/.test(path)) return "llm.norm";
  return null;
}

/** The process's peak resident set (VmHWM on Linux; current RSS elsewhere), in bytes. */
export function peakRssBytes(): number {
  try {
    const s = Deno.readTextFileSync("/proc/self/status");
    const m = /VmHWM:\s+(\d+)\s+kB/.exec(s);
    if (m) return Number(m[1]) * 1024;
  } catch { /* not Linux */ }
  return Deno.memoryUsage().rss;
}

/**
 * CPU seconds this process has used (user + system, all threads). On lavapipe the shaders run on
 * this process's threads, so work per CPU-second is a load-independent rate on a shared machine
 * (bench/RESULTS.md).
 */
export function processCpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

const mib = (b: number) => (b / 2 ** 20).toFixed(1);

function table(title: string, rows: ProfileRow[], limit: number): string {
  const shown = rows.slice(0, limit);
  const lines = [
    `| ${title} | count | GPU ms | MiB bound | share |`,
    "| --- | ---: | ---: | ---: | ---: |",
    ...shown.map((r) =>
      `| ${r.name} | ${r.count} | ${r.gpuMs.toFixed(1)} | ${mib(r.bytes)} | ${
        (100 * r.share).toFixed(1)
      }% |`
    ),
  ];
  if (rows.length > limit) lines.push(`| … ${rows.length - limit} more | | | | |`);
  return lines.join("\n");
}

/** Markdown tables of a report (families, model parts, top kernels). */
export function formatProfile(r: ProfileReport, topKernels = 15): string {
  return [
    `profile: wall ${(r.wallMs / 1000).toFixed(2)} s, GPU ${(r.gpuMs / 1000).toFixed(2)} s ` +
    `(${r.timing}), ${r.dispatches} dispatches, ${r.copies} copies, ${r.readbacks} readbacks, ` +
    `pool peak ${mib(r.poolPeakBytes)} MiB, peak RSS ${mib(r.peakRssBytes)} MiB`,
    "",
    table("family", r.families, 30),
    "",
    table("part", r.parts, 40),
    "",
    ...(r.sections.length > 1 || r.sections[0]?.name !== "all"
      ? [table("section", r.sections, 20), ""]
      : []),
    table("kernel", r.kernels, topKernels),
  ].join("\n");
}
