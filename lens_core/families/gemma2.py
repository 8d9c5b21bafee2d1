"""Gemma 2: grouped-query attention, RMSNorm with ``(1 + weight)``, norms before and after each sublayer,
attention-logit and final-logit soft-capping, sliding-window layers alternating with global ones,
``query_pre_attn_scalar`` as the attention scale, embeddings times sqrt(d_model), gelu-tanh gated MLP.

Hugging Face's four block norms map to TransformerLens's names: ``input_layernorm`` -> ``ln1``,
``post_attention_layernorm`` -> ``ln1_post``, ``pre_feedforward_layernorm`` -> ``ln2``,
``post_feedforward_layernorm`` -> ``ln2_post``. The norm weights are stored as ``1 + weight``.
"""

from __future__ import annotations

from ..config import HookedTransformerConfig
from . import gated
from .reader import WeightReader, rope_settings

PREFIXES = ("model.",)
NORM_OFFSET = 1.0  # Gemma's RMSNorm multiplies by (1 + weight)


def _cap(value) -> float:
    return float(value) if value else -1.0


def config_from_hf(hf) -> HookedTransformerConfig:
    base, fraction, scaling = rope_settings(hf)
    if fraction != 1.0:
        raise ValueError("partial rotary is not supported for Gemma")
    return gated.base_config(
        hf, act_fn=gated.activation(getattr(hf, "hidden_activation", None) or hf.hidden_act),
        sublayer_norms="pre_post", attn_scale=float(hf.query_pre_attn_scalar) ** 0.5,
        attn_scores_soft_cap=_cap(hf.attn_logit_softcapping), output_logits_soft_cap=_cap(hf.final_logit_softcapping),
        rotary_base=base, rope_scaling=scaling, embed_scale=float(hf.hidden_size) ** 0.5,
    )


NORMS = {"ln1": "input_layernorm", "ln1_post": "post_attention_layernorm", "ln2": "pre_feedforward_layernorm",
         "ln2_post": "post_feedforward_layernorm"}


def convert(r: WeightReader, cfg: HookedTransformerConfig) -> dict:
    return gated.convert_blocks(r, cfg, NORMS, NORM_OFFSET)
