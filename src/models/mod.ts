// Models: configs, SigLIP, projector, Qwen2, SiQ-VL, checkpoints (ours, original V1/V3, PEFT).
export * from "./configs.ts";
export * from "./siglip.ts";
export * from "./projector.ts";
export * from "./qwen2.ts";
export * from "./siqvl.ts";
export * from "./checkpoint_keys.ts";
export * from "./checkpoint.ts";
export * from "./peft.ts";
export * from "./tensor_bytes.ts";
export * from "./factory.ts";
