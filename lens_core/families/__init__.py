"""One small converter per architecture family: Hugging Face config and weights -> ours.

Each family module provides ``config_from_hf(hf_config) -> HookedTransformerConfig`` and
``convert(weights: Reader, cfg) -> dict`` giving a canonical state dict with
TransformerLens names and shapes (``blocks.0.attn.W_Q``: [head, d_model, d_head]).
"""

from __future__ import annotations

from types import ModuleType

from . import gpt2, llama, neox

FAMILIES: dict[str, ModuleType] = {
    "gpt2": gpt2,
    "gpt_neox": neox,
    "llama": llama,
    "mistral": llama,
    "qwen2": llama,
}


def family_for(model_type: str) -> ModuleType:
    try:
        return FAMILIES[model_type]
    except KeyError:
        raise ValueError(
            f"architecture {model_type!r} is not supported; supported: {', '.join(sorted(FAMILIES))}"
        ) from None
