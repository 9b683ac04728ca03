// Inference: KV cache, token choice, generation (greedy / sampling / beam search).
export * from "./kv_cache.ts";
export * from "./sampling.ts";
export * from "./decode.ts";
export * from "./generate.ts";
export * from "./beam.ts";
