/// <reference lib="dom" />
/**
 * siqvl in a web page: the library core that inference needs, for `deno task bundle:web`.
 * The same model classes, kernels, shaders (fetched relative to the bundle's URL), tokenizer,
 * chat template and generation as in Deno; files come through a folder object (HTTP Range
 * requests with an optional Cache API copy, or files the visitor picked) instead of Deno's file
 * system, and images through the browser's decoder.
 *
 * @module
 */
export { Gpu } from "../gpu/device.ts";
export { openSiqvl, type SiqvlBundle } from "../models/factory.ts";
export { blobSource, httpFolder, type HttpStats } from "../io/source_http.ts";
export type { ByteSource, ModelFolder } from "../io/source.ts";
export { filesFolder } from "./files_folder.ts";
export { decodeInBrowser } from "./image.ts";
export { preprocessRgb } from "../data/image_processor.ts";
export { ask, type AskResult, decodeAnswer } from "./ask.ts";
export { checkShaders, type ShaderCheck } from "./shader_check.ts";
export { digest } from "./digest.ts";
export { askServer, type ServerAnswer } from "./api_client.ts";
