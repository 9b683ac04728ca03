// Saving a whole state dict into a model directory the way Hugging Face does: one
// `model.safetensors` / `pytorch_model.bin`, or numbered shards plus an index JSON
// (`{"metadata": {"total_size": N}, "weight_map": {name: shard}}`) once a size cap is passed.

import { join } from "node:path";
import { writeSafetensors } from "./safetensors.ts";
import { planTensors, type TensorData, type TensorsToWrite } from "./tensor_input.ts";
import { writeTorchBin } from "./torch_bin.ts";
import { atomicWrite, writeAll } from "./file.ts";

/** Options for {@link writeStateDict}. */
export interface WriteStateDictOptions {
  /** "safetensors" (default) or "bin" (PyTorch zip, `pytorch_model.bin`). */
  format?: "safetensors" | "bin";
  /** Keep weight files of the other format (a .bin copy beside the safetensors). */
  keepOther?: boolean;
  /** Largest shard in bytes before splitting (default 5 GB, as transformers). */
  maxShardBytes?: number;
  /** safetensors `__metadata__` (default {"format": "pt"}). */
  metadata?: Record<string, string>;
}

/** Default shard size cap: 5 GB (decimal), as transformers' save_pretrained. */
export const DEFAULT_MAX_SHARD_BYTES = 5_000_000_000;

/**
 * Write `tensors` into directory `dir` (created if needed) as a Hugging Face checkpoint and
 * return the file names written (shards first, index last). Each file is written atomically.
 * Weight files of an earlier save in `dir` that the new checkpoint does not use (the other
 * format, a different shard count) are removed afterwards so that loaders cannot pick them up.
 */
export async function writeStateDict(
  dir: string,
  tensors: TensorsToWrite,
  options: WriteStateDictOptions = {},
): Promise<string[]> {
  const format = options.format ?? "safetensors";
  const max = options.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES;
  if (!(max > 0)) throw new Error(`maxShardBytes must be positive, got ${max}`);
  const plan = planTensors(tensors, dir);
  const shards: typeof plan[] = [];
  let cur: typeof plan = [];
  let size = 0;
  for (const t of plan) {
    if (cur.length > 0 && size + t.byteLength > max) {
      shards.push(cur);
      cur = [];
      size = 0;
    }
    cur.push(t);
    size += t.byteLength;
  }
  if (cur.length > 0 || shards.length === 0) shards.push(cur);

  const base = format === "bin" ? "pytorch_model" : "model";
  const ext = format === "bin" ? "bin" : "safetensors";
  const n = shards.length;
  const names = n === 1
    ? [`${base}.${ext}`]
    : shards.map((_, i) =>
      `${base}-${String(i + 1).padStart(5, "0")}-of-${String(n).padStart(5, "0")}.${ext}`
    );
  await Deno.mkdir(dir, { recursive: true });
  for (let i = 0; i < n; i++) {
    const list = shards[i].map((t): TensorData & { name: string } => ({
      name: t.name,
      dtype: t.dtype,
      shape: t.shape,
      data: t.data,
    }));
    const path = join(dir, names[i]);
    if (format === "bin") await writeTorchBin(path, list);
    else await writeSafetensors(path, list, options.metadata ?? { format: "pt" });
  }
  const written = [...names];
  if (n > 1) {
    const weightMap: Record<string, string> = {};
    const entries = shards.flatMap((s, i) => s.map((t) => [t.name, names[i]] as const));
    entries.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    for (const [k, f] of entries) weightMap[k] = f;
    const totalSize = plan.reduce((s, t) => s + t.byteLength, 0);
    const index = { metadata: { total_size: totalSize }, weight_map: weightMap };
    const indexName = `${base}.${ext}.index.json`;
    await atomicWrite(join(dir, indexName), async (f) => {
      await writeAll(f, new TextEncoder().encode(JSON.stringify(index, null, 2) + "\n"));
    });
    written.push(indexName);
  }
  await removeStale(dir, new Set(written), options.keepOther ? ext : undefined);
  return written;
}

const WEIGHT_FILE =
  /^(model\.safetensors(\.index\.json)?|model-\d{5}-of-\d{5}\.safetensors|pytorch_model\.bin(\.index\.json)?|pytorch_model-\d{5}-of-\d{5}\.bin)$/;

async function removeStale(dir: string, keep: Set<string>, onlyExt?: string): Promise<void> {
  for await (const e of Deno.readDir(dir)) {
    const sameFormat = !onlyExt || e.name.includes(`.${onlyExt}`);
    if (e.isFile && WEIGHT_FILE.test(e.name) && !keep.has(e.name) && sameFormat) {
      await Deno.remove(join(dir, e.name));
    }
  }
}
