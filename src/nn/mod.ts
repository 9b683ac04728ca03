// Modules: parameters, Linear (+LoRA), Embedding, norms, dropout, checkpoint loading.
export * from "./parameter.ts";
export * from "./module.ts";
export * from "./linear.ts";
export * from "./embedding.ts";
export * from "./norm.ts";
export * from "./dropout.ts";
export * from "./random.ts";
export * from "./load.ts";
export * from "./lora.ts";
