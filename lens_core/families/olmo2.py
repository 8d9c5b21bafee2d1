"""OLMo 2: norms after each sublayer only (``post_attention_layernorm`` -> ``ln1_post``,
``post_feedforward_layernorm`` -> ``ln2_post``, applied to the sublayer's output before the residual
add; there is no ``ln1``/``ln2``), and query/key RMSNorms over the whole projection (all heads at once,
weights [n_heads * d_head] and [n_kv_heads * d_head]) before rotary. Gated SiLU MLP, no biases.
"""

from __future__ import annotations

from ..config import HookedTransformerConfig
from . import gated
from .reader import WeightReader, rope_settings

PREFIXES = ("model.",)


def config_from_hf(hf) -> HookedTransformerConfig:
    base, fraction, scaling = rope_settings(hf)
    if fraction != 1.0:
        raise ValueError("partial rotary is not supported for OLMo 2")
    return gated.base_config(hf, act_fn=gated.activation(hf.hidden_act), sublayer_norms="post", qk_norm="all",
                             rotary_base=base, rope_scaling=scaling)


def convert(r: WeightReader, cfg: HookedTransformerConfig) -> dict:
    d = cfg.d_model
    sd = {"embed.W_E": r.get("embed_tokens.weight", (cfg.d_vocab, d))}
    for l in range(cfg.n_layers):
        p, out = f"layers.{l}.", f"blocks.{l}."
        sd[out + "ln1_post.w"] = gated.norm(r, p + "post_attention_layernorm.weight", d, 0.0)
        sd[out + "ln2_post.w"] = gated.norm(r, p + "post_feedforward_layernorm.weight", d, 0.0)
        gated.attention(r, cfg, p, out, sd)
        gated.qk_norms(r, cfg, p, out, sd)
        gated.gated_mlp(r, cfg, p, out, sd)
    return gated.final_and_head(r, cfg, sd)
