// Tensor, tape and ops, re-exported (importing this loads the autograd tape).
export * from "./tensor.ts";
export * from "./tape.ts";
export * from "./half.ts";
export * from "./windows.ts";
export * from "./tuning.ts";
export * from "./ops/elementwise.ts";
export * from "./ops/cast.ts";
export * from "./ops/matmul.ts";
export * from "./ops/patchify.ts";
export * from "./ops/nn.ts";
export * from "./ops/pixel_shuffle.ts";
export * from "./ops/embedding.ts";
export * from "./ops/optim.ts";
export * from "./ops/attention.ts";
export * from "./ops/softmax.ts";
export * from "./ops/linear_ce.ts";
export * from "./ops/seq_logprob.ts";
