"""Small helpers shared across lens_core: activation names."""

from __future__ import annotations

from typing import Optional

_ATTN = {"q", "k", "v", "z", "rot_q", "rot_k", "attn_scores", "pattern", "result"}
_MLP = {"pre", "post", "pre_linear"}
_BLOCK = {"resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"}
_ALIASES = {"attn": "pattern", "attn_logits": "attn_scores", "key": "k", "query": "q", "value": "v", "mlp_pre": "pre", "mlp_post": "post"}


def get_act_name(name: str, layer: Optional[int] = None, layer_type: Optional[str] = None) -> str:
    """TransformerLens's shorthand: ``get_act_name("pattern", 3) == "blocks.3.attn.hook_pattern"``.

    ``layer`` must be non-negative here; ``ActivationCache`` resolves negative layers first.
    Norm hooks: ``("scale", 2, "ln1")`` -> ``blocks.2.ln1.hook_scale``; ``("scale",)`` -> ``ln_final.hook_scale``.
    """
    if "." in name or name.startswith("hook_"):
        return name  # already a full name
    name = _ALIASES.get(name, name)
    if name in ("embed", "pos_embed"):
        return f"hook_{name}"
    if name in ("scale", "normalized"):
        if layer is None:
            return f"ln_final.hook_{name}"
        if layer_type not in ("ln1", "ln2"):
            raise ValueError(f"{name!r} needs layer_type 'ln1' or 'ln2' with a layer")
        return f"blocks.{layer}.{layer_type}.hook_{name}"
    if layer is None:
        raise ValueError(f"activation {name!r} needs a layer")
    if name in _ATTN:
        return f"blocks.{layer}.attn.hook_{name}"
    if name in _MLP:
        return f"blocks.{layer}.mlp.hook_{name}"
    if name in _BLOCK:
        return f"blocks.{layer}.hook_{name}"
    raise ValueError(f"unknown activation name {name!r}")
