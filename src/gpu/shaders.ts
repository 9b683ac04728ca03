// WGSL sources live in `shaders/` (one file per kernel family). They are loaded relative to this
// module's URL — from disk for a local checkout, over HTTP(S) when siqvl is imported from a URL —
// never from the working directory.

/** Every shader file in `shaders/` (without `.wgsl`). tests/url_import_test.ts keeps this in sync. */
export const SHADER_FILES: readonly string[] = [
  "attention",
  "attention_tiled",
  "cast",
  "elementwise",
  "embedding",
  "finite",
  "gemm_tiled",
  "linear_ce",
  "matmul",
  "matmul_pack",
  "nn",
  "optim",
  "patchify",
  "pixel_shuffle",
  "po_loss",
  "rope",
  "seq_logprob",
  "softmax",
];

/**
 * Shaders derived from a file by switching on its lines that start with `//f16 ` (after any indentation) (an `enable f16;`
 * directive and the code that needs it): name → base file. They are compiled only on a device
 * with shader-f16 (the base file compiles everywhere); loadShaderSources adds one whenever its base
 * is loaded.
 */
export const F16_VARIANTS: Readonly<Record<string, string>> = { gemm_tiled_f16: "gemm_tiled" };

/**
 * The kernel family of a shader file where it differs from the file's name: the GPU variants
 * count under the family of the op they implement (profiles compare like with like across
 * adapters; the kernel column keeps the file name).
 */
export const SHADER_FAMILY: Readonly<Record<string, string>> = {
  gemm_tiled: "matmul",
  gemm_tiled_f16: "matmul",
  attention_tiled: "attention",
};

/** URL of a shader file, relative to this module. */
export function shaderUrl(name: string): URL {
  return new URL(`../../shaders/${name}.wgsl`, import.meta.url);
}

/** Fetch the sources of the named shader files. */
export async function loadShaderSources(names: readonly string[]): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  await Promise.all(names.map(async (name) => {
    const url = shaderUrl(name);
    let text: string;
    if (url.protocol === "file:") {
      text = await Deno.readTextFile(url);
    } else {
      const res = await fetch(url);
      if (!res.ok) throw new Error(`cannot load shader ${url}: HTTP ${res.status}`);
      text = await res.text();
    }
    out.set(name, text);
  }));
  for (const [name, base] of Object.entries(F16_VARIANTS)) {
    const code = out.get(base);
    if (code !== undefined) out.set(name, code.replace(/^(\s*)\/\/f16 /gm, "$1"));
  }
  return out;
}
