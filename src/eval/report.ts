// Evaluation outputs: results.json (per task: metric values, n, seconds, throughput, hashes),
// a Markdown table (results.md), per-sample JSONL, and side-by-side comparison of result
// folders (`--compare`).

import { createHash } from "node:crypto";
import { join } from "node:path";
import type { TaskResult } from "./runner.ts";

/** The content of results.json. */
export interface EvalResults {
  checkpoint: string;
  /** sha256 over the checkpoint's config, weight and tokenizer files (first 16 hex digits). */
  checkpoint_hash: string;
  created: string;
  tasks: TaskResult[];
}

/**
 * A hash of a checkpoint: sha256 over (name, bytes) of every file directly in the directory
 * (sorted by name; a weights file alone when given a file).
 */
export async function checkpointHash(path: string): Promise<string> {
  const h = createHash("sha256");
  const info = await Deno.stat(path);
  const files = info.isDirectory
    ? [...Deno.readDirSync(path)].filter((e) => e.isFile).map((e) => join(path, e.name)).sort()
    : [path];
  for (const f of files) {
    h.update(f.slice(f.lastIndexOf("/") + 1) + "\0");
    const file = await Deno.open(f);
    try {
      const buf = new Uint8Array(1 << 20);
      for (let n = await file.read(buf); n !== null; n = await file.read(buf)) {
        h.update(buf.subarray(0, n));
      }
    } finally {
      file.close();
    }
  }
  return h.digest("hex").slice(0, 16);
}

const fmt = (v: number) => (Number.isInteger(v) ? String(v) : v.toFixed(4));

/** The Markdown results table: one row per task and metric value. */
export function resultsMarkdown(r: EvalResults): string {
  const lines = [
    `# Evaluation of ${r.checkpoint}`,
    "",
    `checkpoint hash \`${r.checkpoint_hash}\`, ${r.created}`,
    "",
    "| task | metric | value | n | seconds | questions/s | tokens/s |",
    "|---|---|---:|---:|---:|---:|---:|",
  ];
  for (const t of r.tasks) {
    for (const [k, v] of Object.entries(t.metrics)) {
      lines.push(
        `| ${t.task} | ${k} | ${fmt(v)} | ${t.n} | ${t.seconds.toFixed(1)} | ` +
          `${t.questions_per_second.toFixed(2)} | ${t.tokens_per_second.toFixed(1)} |`,
      );
    }
  }
  return lines.join("\n") + "\n";
}

/** Write results.json and results.md into `dir`. */
export async function writeResults(dir: string, r: EvalResults): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(join(dir, "results.json"), JSON.stringify(r, null, 2) + "\n");
  await Deno.writeTextFile(join(dir, "results.md"), resultsMarkdown(r));
}

/** Read a results folder's results.json (an error names the folder). */
export async function readResults(dir: string): Promise<EvalResults> {
  const path = dir.endsWith(".json") ? dir : join(dir, "results.json");
  try {
    const r = JSON.parse(await Deno.readTextFile(path)) as EvalResults;
    if (!Array.isArray(r.tasks)) throw new Error('no "tasks" list');
    return r;
  } catch (e) {
    throw new Error(`--compare ${dir}: cannot read ${path}: ${(e as Error).message}`);
  }
}

/** Side-by-side Markdown table of several result folders (task/metric rows × checkpoints). */
export function compareMarkdown(dirs: string[], results: EvalResults[]): string {
  const keys: string[] = [];
  const seen = new Set<string>();
  const value = results.map((r) => {
    const m = new Map<string, string>();
    for (const t of r.tasks) {
      for (const [k, v] of Object.entries(t.metrics)) {
        const key = `${t.task} | ${k}`;
        if (!seen.has(key)) {
          seen.add(key);
          keys.push(key);
        }
        m.set(key, `${fmt(v)} (n=${t.n})`);
      }
    }
    return m;
  });
  const head = results.map((r, i) => `${dirs[i]} \`${r.checkpoint_hash}\``);
  const lines = [
    `| task | metric | ${head.join(" | ")} |`,
    `|---|---|${results.map(() => "---:").join("|")}|`,
  ];
  for (const k of keys) lines.push(`| ${k} | ${value.map((m) => m.get(k) ?? "–").join(" | ")} |`);
  return lines.join("\n") + "\n";
}
