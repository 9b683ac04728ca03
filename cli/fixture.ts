// deno task fixture <fixture-dir> <out.safetensors> [--sections forward,grad,…] [--no-compare]
//
// Runs a reference fixture (tiny-a format) through siqvl and writes what it computed under the
// names of the fixture's expected.safetensors; prints the error against it when present.

import { parseArgs } from "node:util";
import { join } from "node:path";
import { Gpu } from "../src/gpu/device.ts";
import { announce } from "../src/gpu/announce.ts";
import { writeSafetensors } from "../src/io/safetensors.ts";
import type { TensorData } from "../src/io/tensor_input.ts";
import {
  compareFixture,
  fixtureSections,
  readFixtureInputs,
  runFixture,
} from "../src/parity/mod.ts";

const { values, positionals } = parseArgs({
  args: Deno.args,
  allowPositionals: true,
  allowNegative: true,
  options: {
    sections: { type: "string" },
    compare: { type: "boolean", default: true },
    help: { type: "boolean", short: "h" },
  },
});
if (values.help || positionals.length !== 2) {
  console.log(
    "usage: deno task fixture <fixture-dir> <out.safetensors> [--sections a,b] [--no-compare]\n" +
      `sections: ${fixtureSections().join(", ")}`,
  );
  Deno.exit(values.help ? 0 : 2);
}
/** Runs the fixture and writes (and compares) the results; errors are one line, no stack. */
async function main(): Promise<void> {
  const [dir, outPath] = positionals;
  const gpu = await Gpu.get();
  await announce(gpu);
  const t0 = performance.now();
  const out = await runFixture(gpu, dir, values.sections?.split(",").map((s) => s.trim()));
  console.log(`computed ${out.size} tensors in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

  const tensors: Record<string, TensorData> = {};
  for (const [name, t] of [...out].sort(([a], [b]) => (a < b ? -1 : 1))) {
    const data = t.dtype === "I64" ? BigInt64Array.from(t.data, (v) => BigInt(v)) : t.data;
    tensors[name] = { dtype: t.dtype, shape: t.shape, data };
  }
  await writeSafetensors(outPath, tensors, { format: "pt" });
  console.log(`wrote ${outPath}`);

  const expected = join(dir, "expected.safetensors");
  if (values.compare && (await Deno.stat(expected).catch(() => null))) {
    const rows = await compareFixture(out, expected, await readFixtureInputs(dir));
    console.log(`errors against ${expected} (relative L2, max |diff|):`);
    for (const r of rows) {
      const extra = r.exact === undefined ? "" : r.exact ? "  (identical)" : "  (DIFFERENT)";
      console.log(
        `  ${r.name.padEnd(72)} ${r.relErr.toExponential(2)}  ${r.maxAbs.toExponential(2)}${extra}`,
      );
    }
  }
}

try {
  await main();
} catch (e) {
  console.error(`error: ${(e as Error).message}`);
  Deno.exit(1);
}
