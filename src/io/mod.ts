// Checkpoint and hub IO, re-exported: tensor readers (safetensors, PyTorch .bin, sharded
// directories), writers, state dicts and the Hugging Face hub cache.
export * from "./reader.ts";
export * from "./safetensors.ts";
export * from "./torch_bin.ts";
export * from "./state_dict.ts";
export * from "./hub.ts";
