// The tokenizer and chat-template packages, pinned here with full `npm:` specifiers (see
// deps.ts). Kept apart from deps.ts so that text processing imports nothing else: the browser
// bundle (src/web/) takes this module without the image decoder, parquet reader or hub client.

export { Template } from "npm:@huggingface/jinja@0.5.11";
export { Tokenizer } from "npm:@huggingface/tokenizers@0.2.0";
