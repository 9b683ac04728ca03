// Deno-only IO loaded on first use. The hub client (node:os/crypto/url, @huggingface/hub), the
// PyTorch .bin reader (node:zlib through zip.ts) and the state-dict writer are imported
// dynamically here, so modules that merely *can* reach them (the checkpoint loader, the model
// factory, openTensors) stay importable in a browser: a bundle puts these in separate chunks
// that a page never loads.

import type * as Hub from "./hub.ts";
import type * as StateDict from "./state_dict.ts";
import type { TorchBinReader } from "./torch_bin.ts";

/** {@link Hub.resolveModel}, loaded on first call. */
export const resolveModel: typeof Hub.resolveModel = async (...args) =>
  (await import("./hub.ts")).resolveModel(...args);

/** {@link StateDict.writeStateDict}, loaded on first call. */
export const writeStateDict: typeof StateDict.writeStateDict = async (...args) =>
  (await import("./state_dict.ts")).writeStateDict(...args);

/** `TorchBinReader.open`, loaded on first call. */
export async function openTorchBin(path: string): Promise<TorchBinReader> {
  return (await import("./torch_bin.ts")).TorchBinReader.open(path);
}
