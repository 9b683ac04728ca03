// Compile every shader file and build a pipeline for every compute entry point on a device,
// collecting each compiler's messages: the same check runs in Deno (wgpu's naga) and in a page
// (Dawn's Tint, whose uniformity analysis is stricter), see shared/docs/BROWSER.md.

import { loadShaderSources, SHADER_FILES } from "../gpu/shaders.ts";

/** The outcome for one entry point (or for a whole file that failed to compile). */
export interface ShaderCheck {
  shader: string;
  entry: string;
  ok: boolean;
  error?: string;
}

/** Compute entry points of a WGSL source, in order. */
export function computeEntries(code: string): string[] {
  const out: string[] = [];
  const re = /@compute[^;{]*?fn\s+([A-Za-z_][A-Za-z0-9_]*)\s*\(/g;
  const live = code.replace(/\/\/[^\n]*/g, ""); // not entry points in comments
  for (let m = re.exec(live); m; m = re.exec(live)) out.push(m[1]);
  return out;
}

/** Check every shader of SHADER_FILES on `device`. */
export async function checkShaders(device: GPUDevice): Promise<ShaderCheck[]> {
  const sources = await loadShaderSources(SHADER_FILES);
  const out: ShaderCheck[] = [];
  for (const shader of SHADER_FILES) {
    const code = sources.get(shader)!;
    device.pushErrorScope("validation");
    const module = device.createShaderModule({ code, label: shader });
    const info = await module.getCompilationInfo();
    const scoped = await device.popErrorScope();
    const errors = info.messages.filter((m) => m.type === "error")
      .map((m) => `${shader}.wgsl:${m.lineNum}:${m.linePos}: ${m.message}`);
    if (errors.length || scoped) {
      out.push({ shader, entry: "*", ok: false, error: errors.join("\n") || scoped!.message });
      continue;
    }
    for (const entry of computeEntries(code)) {
      device.pushErrorScope("validation");
      let error: string | undefined;
      try {
        await device.createComputePipelineAsync({
          layout: "auto",
          label: `${shader}:${entry}`,
          compute: { module, entryPoint: entry },
        });
      } catch (e) {
        error = (e as Error).message;
      }
      const e2 = await device.popErrorScope();
      error ??= e2?.message;
      out.push({ shader, entry, ok: error === undefined, ...(error ? { error } : {}) });
    }
  }
  return out;
}
