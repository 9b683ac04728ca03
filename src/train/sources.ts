// Model arguments → local directories: an existing directory as is, a hub id
// (`org/name[@revision]`) through the hub cache (downloading what is missing unless offline).

import { resolveModel } from "../io/hub.ts";

/** A local directory holding the model's files. */
export async function resolveModelSource(spec: string, log: (s: string) => void): Promise<string> {
  try {
    if (Deno.statSync(spec).isDirectory) return spec;
  } catch { /* not a local path */ }
  log(`[siqvl] resolving ${spec} through the hub cache`);
  try {
    return await resolveModel(spec);
  } catch (e) {
    throw new Error(
      `cannot find model "${spec}": not a local directory, and the hub lookup failed ` +
        `(${(e as Error).message}). Download it first or pass a local directory.`,
    );
  }
}
