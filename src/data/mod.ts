/**
 * Data pipeline: images, tokenizer, chat template, SiQ-VL processor, collator, datasets and
 * the resumable loader. See README.md in this folder for how the pieces fit.
 *
 * @module
 */

export * from "./image.ts";
export * from "./resize.ts";
export * from "./image_processor.ts";
export * from "./image_pool.ts";
export * from "./tokenizer.ts";
export * from "./chat_template.ts";
export * from "./processor.ts";
export * from "./collator.ts";
export * from "./inspect.ts";
export * from "./loader.ts";
export * from "./rng.ts";
export * from "./datasets/types.ts";
export * from "./datasets/shapes.ts";
export * from "./datasets/llava.ts";
export * from "./datasets/finevision.ts";
export * from "./datasets/remote_files.ts";
export * from "./datasets/split.ts";
export * from "./datasets/hub_cache.ts";
