// Flag parsing shared by the CLIs (train has its own table in src/train/args.ts): strict parsing
// whose errors point at --help, and number flags whose errors name the flag and the value.

import { parseArgs, type ParseArgsOptionsConfig } from "node:util";

/** Strict `--flag value` parsing; an unknown or malformed flag is an error ending "; see --help". */
export function parseFlags<const O extends ParseArgsOptionsConfig>(
  argv: string[],
  options: O,
  allowNegative = false,
) {
  try {
    return parseArgs({ args: argv, options, strict: true, allowNegative }).values;
  } catch (e) {
    throw new Error(`${(e as Error).message.split("\n")[0]}; see --help`);
  }
}

/** A number flag: `def` when absent, else the value, which must be finite and pass `ok`. */
export function numFlag<D extends number | undefined>(
  name: string,
  v: string | undefined,
  def: D,
  ok: (x: number) => boolean = () => true,
): number | D {
  if (v === undefined) return def;
  const x = Number(v);
  if (v.trim() === "" || !Number.isFinite(x) || !ok(x)) {
    throw new Error(`--${name}: invalid value "${v}"`);
  }
  return x;
}

/** An integer flag ≥ `min`: `def` when absent. */
export function intFlag<D extends number | undefined>(
  name: string,
  v: string | undefined,
  def: D,
  min = 0,
): number | D {
  if (v === undefined) return def;
  const x = Number(v);
  if (v.trim() === "" || !Number.isInteger(x) || x < min) {
    throw new Error(`--${name}: "${v}" is not an integer >= ${min}`);
  }
  return x;
}

/**
 * The shared shell of the demo CLIs: `--output_dir DIR` (default ./out/demo) and `--help`/`-h`
 * (without touching the GPU), the adapter line, then `run(dir)`; an error prints one line and
 * exits 1.
 */
export async function demoMain(
  argv: string[],
  help: string,
  run: (outDir: string) => Promise<unknown>,
): Promise<void> {
  const { announce } = await import("../src/gpu/announce.ts");
  try {
    const v = parseFlags(argv, {
      output_dir: { type: "string" },
      help: { type: "boolean", short: "h" },
    });
    if (v.help) {
      console.log(help);
      return;
    }
    await announce();
    await run(v.output_dir ?? "./out/demo");
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
