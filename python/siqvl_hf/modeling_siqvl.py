# SiQ-VL model for the Hugging Face stack (transformers + torch only), shipped by siqvl with every
# export. Parameter names are those of the original SiQ-VL SiQ_VLForCausalLM (and of siqvl's
# model.safetensors):
#   vision_model.vision_model.<SigLIP vision transformer>   (a SiglipVisionModel)
#   projector.mlp.weight [Dt, r*r*Dv]  (+ projector.norm.{weight,bias} when use_layernorm)
#   text_model.model.<Qwen2>, text_model.lm_head.weight      (a Qwen2ForCausalLM)
#
# Forward: image features = vision last_hidden_state (after post_layernorm, no pooling head)
# [I, s*s, Dv] -> pixel shuffle with factor r (top-left crop to floor(s/r)*r, then
# out[i*G+j, (dy*r+dx)*Dv + d] = in[(i*r+dy)*s + (j*r+dx), d]) -> Linear without bias
# (-> LayerNorm) -> written over the embeddings of the <|image_pad|> tokens in order.

import math

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.models.qwen2.modeling_qwen2 import Qwen2ForCausalLM
from transformers.models.siglip.modeling_siglip import SiglipVisionModel

from .configuration_siqvl import SiQ_VLConfig


class SiQ_VLProjector(nn.Module):
    """Pixel shuffle (space-to-depth) + Linear without bias (+ LayerNorm)."""

    def __init__(self, pc):
        super().__init__()
        self.factor = int(pc["vision_pixel_shuffle_factor"])
        dv, dt = int(pc["vision_hidden_size"]), int(pc["text_hidden_size"])
        self.mlp = nn.Linear(dv * self.factor * self.factor, dt, bias=False)
        eps = pc.get("layernorm_eps") or 1e-5
        self.norm = nn.LayerNorm(dt, eps=eps) if pc.get("use_layernorm") else None

    def pixel_shuffle(self, x):
        # x: [I, s*s, D] -> [I, G*G, r*r*D] with G = floor(s/r)
        b, n, d = x.shape
        s = math.isqrt(n)
        if s * s != n:
            raise ValueError(f"vision features have {n} patches, not a square grid")
        r = self.factor
        g = s // r
        x = x.reshape(b, s, s, d)[:, : g * r, : g * r]
        x = x.reshape(b, g, r, g, r, d).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(b, g * g, r * r * d)

    def forward(self, x):
        y = self.mlp(self.pixel_shuffle(x))
        return self.norm(y) if self.norm is not None else y


class SiQ_VLPreTrainedModel(PreTrainedModel):
    config_class = SiQ_VLConfig
    base_model_prefix = ""
    supports_gradient_checkpointing = True
    _no_split_modules = ["SiglipEncoderLayer", "Qwen2DecoderLayer"]
    _supports_sdpa = True
    _supports_cache_class = True

    def _init_weights(self, module):
        std = getattr(self.config.text_config, "initializer_range", 0.02)
        if isinstance(module, nn.Linear):
            module.weight.data.normal_(mean=0.0, std=std)
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.data.normal_(mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            module.weight.data.fill_(1.0)
            module.bias.data.zero_()


class SiQ_VLForCausalLM(SiQ_VLPreTrainedModel, GenerationMixin):
    _tied_weights_keys = ["text_model.lm_head.weight"]

    def __init__(self, config):
        super().__init__(config)
        attn = getattr(config, "_attn_implementation", None) or "eager"
        for sub in (config.vision_config, config.text_config):
            sub._attn_implementation = attn
        self.vision_model = SiglipVisionModel(config.vision_config)
        self.projector = SiQ_VLProjector(config.projector_config)
        self.text_model = Qwen2ForCausalLM(config.text_config)
        self.post_init()

    def get_input_embeddings(self):
        return self.text_model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.text_model.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.text_model.get_output_embeddings()

    def set_output_embeddings(self, value):
        self.text_model.set_output_embeddings(value)

    def get_image_features(self, pixel_values):
        """pixel_values [I, 3, S, S] -> image token embeddings [I, tokens, Dt]."""
        dtype = self.vision_model.dtype
        feats = self.vision_model(pixel_values=pixel_values.to(dtype)).last_hidden_state
        return self.projector(feats)

    def embed_inputs(self, input_ids, pixel_values=None):
        embeds = self.get_input_embeddings()(input_ids)
        slots = input_ids == self.config.image_token_index
        n = int(slots.sum())
        if n == 0:
            return embeds
        if pixel_values is None:
            raise ValueError(f"input_ids contain {n} image tokens but no pixel_values were given")
        feats = self.get_image_features(pixel_values).to(embeds.dtype)
        if feats.shape[0] * feats.shape[1] != n:
            raise ValueError(
                f"image token count mismatch: input_ids contain {n} image tokens, but the "
                f"{feats.shape[0]} image(s) produce {feats.shape[0] * feats.shape[1]}"
            )
        mask = slots.unsqueeze(-1).expand_as(embeds)
        return embeds.masked_scatter(mask, feats.reshape(-1, embeds.shape[-1]))

    def forward(
        self,
        input_ids=None,
        pixel_values=None,
        attention_mask=None,
        position_ids=None,
        past_key_values=None,
        inputs_embeds=None,
        labels=None,
        use_cache=None,
        cache_position=None,
        **kwargs,
    ):
        if inputs_embeds is None:
            inputs_embeds = self.embed_inputs(input_ids, pixel_values)
        return self.text_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            labels=labels,
            use_cache=use_cache,
            cache_position=cache_position,
            **kwargs,
        )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """Loads the model; a siqvl stage-2 export whose config says `siqvl_lora.merged: false`
        (base weights + a PEFT LoRA adapter beside them) gets the adapter merged in float32."""
        out = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        model = out[0] if isinstance(out, tuple) else out
        lora = getattr(model.config, "siqvl_lora", None)
        if isinstance(lora, dict) and not lora.get("merged", True):
            model.merge_siqvl_adapter(pretrained_model_name_or_path, lora, kwargs)
        return out

    @torch.no_grad()
    def merge_siqvl_adapter(self, where, lora, kwargs=None):
        """W <- W + (lora_alpha / r) * B @ A for every adapted Linear of the language model,
        computed in float32 and rounded once to W's dtype."""
        import json

        from safetensors.torch import load_file
        from transformers.utils import cached_file

        hub = {k: v for k, v in (kwargs or {}).items() if k in ("revision", "cache_dir", "token")}
        cfg_path = cached_file(where, lora.get("adapter_config", "adapter_config.json"), **hub)
        weights = cached_file(where, lora.get("adapter", "adapter_model.safetensors"), **hub)
        with open(cfg_path) as f:
            acfg = json.load(f)
        r = acfg["r"]
        scale = acfg["lora_alpha"] / (math.sqrt(r) if acfg.get("use_rslora") else r)
        tensors = load_file(weights)
        modules = dict(self.text_model.named_modules())
        merged = 0
        for key, a in tensors.items():
            if ".lora_A." not in key:
                continue
            path = key.split(".lora_A.")[0]
            b = tensors[key.replace(".lora_A.", ".lora_B.")]
            name = path[len("base_model.model."):] if path.startswith("base_model.model.") else path
            linear = modules.get(name)
            if linear is None:
                raise ValueError(f"{weights}: adapter key {key} names no module of the language model")
            w = linear.weight
            w.copy_((w.float() + scale * (b.float() @ a.float())).to(w.dtype))
            merged += 1
        if merged == 0:
            raise ValueError(f"{weights}: no LoRA A/B pairs found")
        self.config.siqvl_lora = {**lora, "merged": True, "merged_on_load": merged}

    def prepare_inputs_for_generation(self, input_ids, pixel_values=None, **kwargs):
        inputs = super().prepare_inputs_for_generation(input_ids, **kwargs)
        # The image goes in with the prompt only; later steps feed one text token each.
        cache_position = inputs.get("cache_position")
        if cache_position is None or int(cache_position[0]) == 0:
            inputs["pixel_values"] = pixel_values
        return inputs


__all__ = ["SiQ_VLForCausalLM", "SiQ_VLPreTrainedModel", "SiQ_VLProjector"]
