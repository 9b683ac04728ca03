# SiQ-VL configuration for the Hugging Face stack (transformers + torch only), shipped by siqvl
# with every export so that `AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)`
# loads a model trained with siqvl. It reads the config.json siqvl writes (the original SiQ-VL
# SiQ_VLConfig layout): nested `vision_config` (SigLIP vision), `text_config` (Qwen2),
# `projector_config` and the special token indices.

from transformers import PretrainedConfig
from transformers.models.qwen2.configuration_qwen2 import Qwen2Config
from transformers.models.siglip.configuration_siglip import SiglipVisionConfig


class SiQ_VLConfig(PretrainedConfig):
    """Vision tower (SigLIP) -> pixel-shuffle projector -> language model (Qwen2)."""

    model_type = "siq_vl"
    sub_configs = {"vision_config": SiglipVisionConfig, "text_config": Qwen2Config}

    def __init__(
        self,
        vision_config=None,
        text_config=None,
        projector_config=None,
        ignore_token_index=-100,
        image_token_index=151655,
        vision_start_token_index=151652,
        vision_end_token_index=151653,
        **kwargs,
    ):
        if isinstance(vision_config, dict):
            vision_config = SiglipVisionConfig(**vision_config)
        elif vision_config is None:
            vision_config = SiglipVisionConfig(vision_use_head=False)
        if isinstance(text_config, dict):
            text_config = Qwen2Config(**text_config)
        elif text_config is None:
            text_config = Qwen2Config()
        self.vision_config = vision_config
        self.text_config = text_config
        projector_config = dict(projector_config or {})
        projector_config.setdefault("vision_pixel_shuffle_factor", 2)
        projector_config.setdefault("vision_hidden_size", vision_config.hidden_size)
        projector_config.setdefault("text_hidden_size", text_config.hidden_size)
        projector_config.setdefault("use_layernorm", False)
        self.projector_config = projector_config
        self.ignore_token_index = ignore_token_index
        self.image_token_index = image_token_index
        self.vision_start_token_index = vision_start_token_index
        self.vision_end_token_index = vision_end_token_index
        # The language model decides whether its head is tied to the embeddings.
        kwargs.setdefault("tie_word_embeddings", getattr(text_config, "tie_word_embeddings", True))
        super().__init__(**kwargs)
