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
    d = cfg.d_model
    sd = {"embed.W_E": r.get("embed_tokens.weight", (cfg.d_vocab, d))}
    for l in range(cfg.n_layers):
        p, out = f"layers.{l}.", f"blocks.{l}."
        sd[out + "ln1.w"] = gated.norm(r, p + "input_layernorm.weight", d, 0.0)
        sd[out + "ln2.w"] = gated.norm(r, p + "post_attention_layernorm.weight", d, 0.0)
        gated.attention(r, cfg, p, out, sd)
        gated.qk_norms(r, cfg, p, out, sd)
        gated.gated_mlp(r, cfg, p, out, sd)
    return gated.final_and_head(r, cfg, sd)
