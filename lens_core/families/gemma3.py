"""Gemma 3 text models (``Gemma3ForCausalLM``, model type ``gemma3_text``): Gemma 2's layout plus per-head
query/key RMSNorms (``(1 + weight)``, before rotary: ``attn.q_norm``, ``attn.k_norm``), one global layer in
every ``sliding_window_pattern`` (from ``layer_types``), and separate rotary bases: ``rope_parameters
["sliding_attention"]`` (``rope_local_base_freq``, 10k) for the local layers, ``["full_attention"]`` (1M, with
its scaling) for the global ones. Soft-capping is off unless the config sets it (None by default).
"""

from __future__ import annotations

from ..config import HookedTransformerConfig
from . import gated, gemma2
from .reader import WeightReader

PREFIXES = ("model.",)


def _rope(params: dict, which: str) -> tuple[float, object]:
    entry = dict(params.get(which) or {})
    scaling = entry if entry.get("rope_type", "default") != "default" else None
    return float(entry.get("rope_theta", 10000.0)), scaling


def config_from_hf(hf) -> HookedTransformerConfig:
    params = getattr(hf, "rope_parameters", None) or {}
    if "full_attention" in params:
        base, scaling = _rope(params, "full_attention")
        local_base, local_scaling = _rope(params, "sliding_attention")
        if local_scaling is not None:
            raise ValueError("rotary scaling on Gemma 3's local layers is not supported")
    else:  # older configs: rope_theta and rope_local_base_freq
        base, scaling = float(getattr(hf, "rope_theta", 1e6)), getattr(hf, "rope_scaling", None)
        local_base = float(getattr(hf, "rope_local_base_freq", 10000.0))
    return gated.base_config(
        hf, act_fn=gated.activation(getattr(hf, "hidden_activation", None) or hf.hidden_act),
        sublayer_norms="pre_post", qk_norm="head", attn_scale=float(hf.query_pre_attn_scalar) ** 0.5,
        attn_scores_soft_cap=gemma2._cap(hf.attn_logit_softcapping),
        output_logits_soft_cap=gemma2._cap(hf.final_logit_softcapping),
        rotary_base=base, rope_scaling=scaling, rotary_base_local=local_base, embed_scale=float(hf.hidden_size) ** 0.5,
    )


def convert(r: WeightReader, cfg: HookedTransformerConfig) -> dict:
    return gated.convert_blocks(r, cfg, gemma2.NORMS, gemma2.NORM_OFFSET, qk_offset=gemma2.NORM_OFFSET)
