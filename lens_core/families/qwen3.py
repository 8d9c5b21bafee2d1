"""Qwen3: the Llama layout (RMSNorm before each sublayer, rotary, gated SiLU MLP, grouped-query attention)
plus an RMSNorm over each head's query and key before rotary (``attn.q_norm``, ``attn.k_norm``, weights
[d_head]); q/k/v biases when ``attention_bias`` is set; sliding-window layers from ``layer_types``.
"""

from __future__ import annotations

from ..config import HookedTransformerConfig
from . import gated
from .reader import WeightReader, rope_settings

PREFIXES = ("model.",)


def config_from_hf(hf) -> HookedTransformerConfig:
    base, fraction, scaling = rope_settings(hf)
    if fraction != 1.0:
        raise ValueError("partial rotary is not supported for Qwen3")
    return gated.base_config(hf, act_fn=gated.activation(hf.hidden_act), qk_norm="head", rotary_base=base, rope_scaling=scaling)


def convert(r: WeightReader, cfg: HookedTransformerConfig) -> dict:
    return gated.convert_blocks(r, cfg, {"ln1": "input_layernorm", "ln2": "post_attention_layernorm"}, qk_offset=0.0)
