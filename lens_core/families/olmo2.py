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
    return gated.convert_blocks(r, cfg, {"ln1_post": "post_attention_layernorm", "ln2_post": "post_feedforward_layernorm"}, qk_offset=0.0)
