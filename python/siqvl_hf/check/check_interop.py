# The PyTorch side of scripts/check_hf_interop.sh: loads a siqvl export with the Hugging Face
# stack and compares its logits and greedy tokens with the project's own (written by
# scripts/hf_interop_export.ts). Usage: check_interop.py WORK_DIR FIXTURE_DIR
#   WORK_DIR/export/                      the export (SiQ-VL layout + vision/ + text/)
#   WORK_DIR/project_outputs.safetensors  the project's logits [B, T, V] and greedy tokens
# Prints one line per check and exits 1 when a check fails.

import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import safetensors_lite  # noqa: E402

lite = safetensors_lite.install()

from transformers import AutoModelForCausalLM  # noqa: E402
from transformers.models.qwen2.modeling_qwen2 import Qwen2ForCausalLM  # noqa: E402
from transformers.models.siglip.modeling_siglip import SiglipVisionModel  # noqa: E402

work, fixture = sys.argv[1], sys.argv[2]
export = os.path.join(work, "export")
ours = safetensors_lite.load_file(os.path.join(work, "project_outputs.safetensors"))
inputs = safetensors_lite.load_file(os.path.join(fixture, "inputs.safetensors"))
LOGITS_TOL = 1e-4  # f32 round-off of two implementations over a few layers
failed = []


def report(name, ok, detail):
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
    if not ok:
        failed.append(name)


print(f"torch {torch.__version__}; safetensors: {'safetensors_lite (package is a stand-in)' if lite else 'package'}")

# 1. One line: AutoModelForCausalLM through auto_map + the shipped modeling file.
model, info = AutoModelForCausalLM.from_pretrained(
    export, trust_remote_code=True, output_loading_info=True
)
model.eval()
missing = [k for k in info["missing_keys"] if k != "text_model.lm_head.weight"]
lora = getattr(model.config, "siqvl_lora", None)
report(
    "AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)",
    not missing and not info["unexpected_keys"] and not info["mismatched_keys"]
    and (lora is None or lora.get("merged") is True),
    f"{type(model).__name__}, missing {missing}, unexpected {info['unexpected_keys']}"
    + (f", LoRA adapter merged on load into {lora.get('merged_on_load')} Linear layers" if lora else ""),
)

ids = inputs["input_ids"].long()
mask = inputs["attention_mask"].long()
pixels = inputs["pixel_values"].float()
with torch.no_grad():
    logits = model(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits
want = ours["logits"]
valid = mask.bool()
diff = (logits - want).abs()[valid]
scale = want.abs()[valid].max().item()
report(
    "logits vs project",
    diff.max().item() <= LOGITS_TOL * max(1.0, scale),
    f"max |diff| {diff.max().item():.3e}, mean {diff.mean().item():.3e} over "
    f"{int(valid.sum())} positions x {want.shape[-1]} (max |logit| {scale:.3f})",
)

# 2. Greedy tokens: HF generate (KV cache) and the project's generate().
try:
    import torch.distributed.fsdp  # noqa: F401
except Exception as e:  # Debian's torch 1.13 under Python 3.11 cannot import it
    import transformers.generation.utils as gen_utils

    print(f"note: torch.distributed.fsdp does not import here ({type(e).__name__}); "
          "generate() is told no module is FSDP-managed")
    gen_utils.is_fsdp_managed_module = lambda module: False
prompt = ours["prompt"].long().unsqueeze(0)
image = ours["prompt_image"].float()
n = ours["greedy"].numel()
with torch.no_grad():
    out = model.generate(
        input_ids=prompt,
        pixel_values=image,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=n,
        min_new_tokens=n,
        do_sample=False,
        num_beams=1,
        pad_token_id=0,
    )
hf_tokens = out[0, prompt.shape[1]:].tolist()
report(
    "greedy tokens vs project",
    hf_tokens == ours["greedy"].tolist(),
    f"hf {hf_tokens} / project {ours['greedy'].tolist()}",
)

# 3. The standard folders: SiglipVisionModel and Qwen2ForCausalLM load with no glue.
vision, vinfo = SiglipVisionModel.from_pretrained(
    os.path.join(export, "vision"), output_loading_info=True
)
text, tinfo = Qwen2ForCausalLM.from_pretrained(
    os.path.join(export, "text"), output_loading_info=True
)
vision.eval()
text.eval()
vmiss = vinfo["missing_keys"] + vinfo["unexpected_keys"]
tmiss = [k for k in tinfo["missing_keys"] if k != "lm_head.weight"] + tinfo["unexpected_keys"]
with torch.no_grad():
    vh = vision(pixel_values=pixels).last_hidden_state
    vref = model.vision_model(pixel_values=pixels).last_hidden_state
    embeds = model.embed_inputs(ids, pixels)
    tl = text(inputs_embeds=embeds, attention_mask=mask).logits
report(
    "vision/ as SiglipVisionModel",
    not vmiss and vision.vision_model.use_head is False and torch.equal(vh, vref),
    f"keys off {vmiss}, use_head {vision.vision_model.use_head}, "
    f"max |diff| {(vh - vref).abs().max().item():.1e}",
)
# With an unmerged LoRA export text/ holds the base weights (its README says so).
report(
    "text/ as Qwen2ForCausalLM",
    not tmiss and (lora is not None or (tl - logits).abs().max().item() == 0.0),
    f"keys off {tmiss}, max |diff| vs the composite {(tl - logits).abs().max().item():.1e}"
    + (" (base weights: the adapter is not merged into text/)" if lora else ""),
)

print("interop check " + ("FAILED: " + ", ".join(failed) if failed else "passed"))
sys.exit(1 if failed else 0)
