"""One small converter per architecture family: Hugging Face config and weights -> ours.

Each family module provides ``config_from_hf(hf_config) -> HookedTransformerConfig`` and
``convert(weights: WeightReader, cfg) -> dict`` giving our model's state dict: the layout
the forward pass multiplies with (``blocks.0.attn.W_QKV``: [d_model, (q|k|v heads) * d_head],
``unembed.weight``: [d_vocab, d_model]). TransformerLens-shaped views are properties of the model.
"""

from __future__ import annotations

from types import ModuleType

from . import gemma2, gemma3, gpt2, llama, neox, olmo2, qwen3

FAMILIES: dict[str, ModuleType] = {
    "gpt2": gpt2,
    "gpt_neox": neox,
    "llama": llama,
    "mistral": llama,
    "qwen2": llama,
    "gemma2": gemma2,
    "gemma3_text": gemma3,
    "qwen3": qwen3,
    "olmo2": olmo2,
}


def family_for(model_type: str) -> ModuleType:
    try:
        return FAMILIES[model_type]
    except KeyError:
        raise ValueError(
            f"architecture {model_type!r} is not supported; supported: {', '.join(sorted(FAMILIES))}"
        ) from None
