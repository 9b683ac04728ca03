// Third-party packages, pinned in one place with full `npm:` specifiers so that mod.ts also works
// when imported from a URL (where this project's deno.json import map does not apply).

export { Template } from "npm:@huggingface/jinja@0.5.11";
export { Tokenizer } from "npm:@huggingface/tokenizers@0.2.0";
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
