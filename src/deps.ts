// Third-party packages, pinned in one place with full `npm:` specifiers so that mod.ts also works
// when imported from a URL (where this project's deno.json import map does not apply).

export { Template, Tokenizer } from "./deps_text.ts";
export { parquetMetadataAsync, parquetReadObjects } from "npm:hyparquet@1.33.0";
export type { FileMetaData, ParquetRow } from "npm:hyparquet@1.33.0";
export { compressors } from "npm:hyparquet-compressors@1.1.2";
export { decode, GIF, Image } from "npm:imagescript@1.3.1";
export {
  createRepo,
  datasetInfo,
  downloadFileToCacheDir,
  HubApiError,
  listFiles,
  modelInfo,
  uploadFiles,
  whoAmI,
} from "npm:@huggingface/hub@2.17.5";
